/* gs_resolve.c - finding the real driver functions, and leading every way to them to ours.
 *
 * The real function behind a hook is the first one a dlsym or cuGetProcAddress answer taught
 * us, else the next definition after this library (a program linked against libcuda), else
 * the one in the library loaded by soname (a driver opened with RTLD_LOCAL is not in the
 * global scope). dlsym and cuGetProcAddress answers for a hooked function are swapped for
 * ours; dlsym(RTLD_NEXT, ...) keeps its meaning for everyone else.
 */
#define _GNU_SOURCE
#include "gs_hooks.h"

#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <string.h>

static const char *const g_names[H_COUNT] = {
#define X(name, lib) #name,
    GS_HOOKS(X)
#undef X
};
static const int g_libs[H_COUNT] = {
#define X(name, lib) lib,
    GS_HOOKS(X)
#undef X
};
static const char *const g_helper_names[R_COUNT] = {"cuCtxGetDevice", "cuGraphGetNodes",
                                                     "nvmlDeviceGetIndex"};
static const int g_helper_libs[R_COUNT] = {LIB_CUDA, LIB_CUDA, LIB_NVML};
static void *g_real[H_COUNT];
static void *g_helper[R_COUNT];

typedef void *(*dlsym_fn)(void *, const char *);

/* glibc's dlsym: asked for by version, since dlsym(RTLD_NEXT, "dlsym") would be ours. */
static dlsym_fn real_dlsym(void)
{
    static dlsym_fn glibc;
    static const char *const versions[] = {"GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17",
                                           "GLIBC_2.0", NULL};
    dlsym_fn fn = __atomic_load_n(&glibc, __ATOMIC_ACQUIRE);
    for (int i = 0; !fn && versions[i]; i++) {
        fn = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", versions[i]);
        if (fn == (dlsym_fn)dlsym)
            fn = NULL;
    }
    if (fn)
        __atomic_store_n(&glibc, fn, __ATOMIC_RELEASE);
    return fn;
}

/* The real NAME: the next definition after this library, else from the library loaded by
 * soname (a driver opened RTLD_LOCAL is not in the global scope). Never one of ours. */
static void *find_real(const char *name, int lib, void *ours)
{
    dlsym_fn sym = real_dlsym();
    const char *soname = lib == LIB_NVML ? "libnvidia-ml.so.1" : "libcuda.so.1";
    void *fn = NULL, *handle;
    if (!sym)
        return NULL;
    fn = sym(RTLD_NEXT, name);
    if (!fn || fn == ours) {
        fn = NULL;
        handle = dlopen(soname, RTLD_LAZY | RTLD_NOLOAD);
        if (!handle)
            handle = dlopen(soname, RTLD_LAZY);
        if (handle) {
            fn = sym(handle, name);
            dlclose(handle); /* still loaded by whoever loaded it first (or by us: harmless) */
        }
    }
    return fn == ours ? NULL : fn;
}

/* A cached lookup: NULL = not looked up yet, MISSING = looked up and absent (so that the
 * hundreds of cuGetProcAddress calls of a runtime's start do not search again each time). */
#define MISSING ((void *)&g_real)

static void *cached(void **slot, const char *name, int lib, void *ours)
{
    void *fn = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!fn) {
        fn = find_real(name, lib, ours);
        __atomic_store_n(slot, fn ? fn : MISSING, __ATOMIC_RELEASE);
    }
    return fn == MISSING ? NULL : fn;
}

void *gs_real(enum gs_hook h)
{
    return cached(&g_real[h], g_names[h], g_libs[h], gs_wrappers[h]);
}

void *gs_helper(enum gs_helper r)
{
    return cached(&g_helper[r], g_helper_names[r], g_helper_libs[r], NULL);
}

/* Keep the first real function learnt for a hook (from dlsym or cuGetProcAddress). */
static void learn(enum gs_hook h, void *fn)
{
    void *have = __atomic_load_n(&g_real[h], __ATOMIC_ACQUIRE);
    while (fn && fn != gs_wrappers[h] && (!have || have == MISSING))
        if (__atomic_compare_exchange_n(&g_real[h], &have, fn, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            break;
}

static int hook_index(const char *name)
{
    if (!name || (name[0] != 'c' && name[0] != 'n'))
        return -1;
    for (int h = 0; h < H_COUNT; h++)
        if (strcmp(name, g_names[h]) == 0)
            return h;
    return -1;
}

/* ---- cuGetProcAddress answers ------------------------------------------------------ */

/* The hook for what the driver answered. Mostly the answer is one of the driver's exported
 * functions, found by address; otherwise the name (a base name, as cuGetProcAddress takes)
 * and the version and flags of the request say which variant it is. */
static int hook_for_answer(const char *symbol, void *fn, int version, cuuint64_t flags)
{
    char name[128];
    int h;
    for (h = 0; h < H_COUNT; h++)
        if (g_libs[h] == LIB_CUDA && (fn == gs_wrappers[h] || fn == gs_real((enum gs_hook)h)))
            return h;
    if (!symbol || strlen(symbol) > sizeof name - 8)
        return -1;
    if (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) {
        snprintf(name, sizeof name, "%s_ptsz", symbol);
        if ((h = hook_index(name)) >= 0)
            return h;
    }
    if (strcmp(symbol, "cuGraphInstantiate") == 0)
        return version >= 12000 ? H_cuGraphInstantiateWithFlags : H_cuGraphInstantiate_v2;
    if (strcmp(symbol, "cuGetProcAddress") == 0)
        return version >= 12000 ? H_cuGetProcAddress_v2 : H_cuGetProcAddress;
    snprintf(name, sizeof name, "%s_v2", symbol);
    if (version >= 3020 && (h = hook_index(name)) >= 0)
        return h;
    return hook_index(symbol);
}

void *gs_swap_answer(const char *symbol, void *fn, int version, cuuint64_t flags)
{
    int h = fn ? hook_for_answer(symbol, fn, version, flags) : -1;
    if (h < 0)
        return fn;
    learn((enum gs_hook)h, fn);
    return gs_wrappers[h];
}

/* ---- dlsym ------------------------------------------------------------------------- */

/* ---- dlsym ------------------------------------------------------------------------- */

/* dlsym(RTLD_NEXT, name) means "after the caller's object", and glibc finds the caller by
 * its return address, which would be ours. So walk the objects loaded after the caller and
 * take the first that defines the name itself. (A data symbol copied into the executable by
 * a copy relocation is not found this way; RTLD_NEXT is used for functions.) */
static void *next_after(dlsym_fn sym, const void *caller, const char *name)
{
    Dl_info info;
    struct link_map *from = NULL, *owner;
    if (!dladdr1(caller, &info, (void **)&from, RTLD_DL_LINKMAP) || !from)
        return NULL;
    for (struct link_map *m = from->l_next; m; m = m->l_next) {
        /* a handle from dlopen, not the bare link_map: dlopen prepares its lookup scope */
        void *handle = dlopen(m->l_name && m->l_name[0] ? m->l_name : NULL,
                              RTLD_LAZY | RTLD_NOLOAD);
        void *fn = handle ? sym(handle, name) : NULL;
        if (handle)
            dlclose(handle);
        owner = NULL;
        if (fn && dladdr1(fn, &info, (void **)&owner, RTLD_DL_LINKMAP) && owner == m)
            return fn;
    }
    return NULL;
}

__attribute__((visibility("default"))) void *dlsym(void *handle, const char *name)
{
    dlsym_fn sym = real_dlsym();
    if (!sym)
        return NULL;
    if (handle == RTLD_NEXT)
        return next_after(sym, __builtin_return_address(0), name);
    void *fn = sym(handle, name);
    int h = fn ? hook_index(name) : -1;
    if (h < 0)
        return fn;
    learn((enum gs_hook)h, fn); /* the handle's own function is the real one */
    return gs_wrappers[h];
}
