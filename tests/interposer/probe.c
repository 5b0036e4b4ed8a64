/* probe.c - a test program that drives the CUDA driver API through the interposer.
 *
 *   probe OP [ARG...] [OP [ARG...]]...
 *
 * prints one line per op: "<op> <CUresult> [values]". Where the driver functions come from
 * (env PROBE_VIA): "linked" (calls the names it was linked with; build with -DPROBE_LINKED
 * and -l:libcuda.so.1), "dlsym" (dlopen("libcuda.so.1", RTLD_LOCAL) + dlsym, the default),
 * "proc" / "proc_v2" (cuGetProcAddress / cuGetProcAddress_v2 for CUDA 12.4 with the flags in
 * PROBE_FLAGS, 2 = per-thread default stream). Ops:
 *   alloc|managed|async|pool|create MIB   allocate by that path      -> "<op> rc"
 *   pitch WIDTH HEIGHT                    cuMemAllocPitch, in bytes  -> "pitch rc pitch"
 *   free                                  free the latest allocation by its own path
 *   info | total                          cuMemGetInfo -> "info rc free total"; cuDeviceTotalMem
 *   hold                                  print "hold 0", then wait for stdin to close
 *   launch SECONDS                        launch in a loop -> "launch 0 count seconds"
 *   graph NODES SECONDS                   graph launches -> "graph rc count seconds"
 *   swapped NAME                          "swapped rc 1" if cuGetProcAddress(NAME) differs
 *                                         from the stand-in's own answer
 *   next NAME                             "next 0 1" if dlsym(RTLD_NEXT) = dlsym(RTLD_DEFAULT)
 *   nvml INDEX                            NVML memory of that GPU -> "nvml rc total free used"
 *   lockdie                               take the share file's lock and exit holding it
 *   churn THREADS ITERS KIB               threads allocating and freeing at random, each
 *                                         ending with all freed -> "churn 0 refused"
 *   benchalloc N KIB | benchlaunch N      ns per alloc+free pair / per launch
 */
#define _GNU_SOURCE
#include "cuda_abi.h"
#include "gpushare.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1ULL << 20)

static struct {
    __typeof__(&cuInit) init;
    __typeof__(&cuCtxCreate_v2) ctx_create;
    __typeof__(&cuMemAlloc_v2) alloc;
    __typeof__(&cuMemAllocManaged) managed;
    __typeof__(&cuMemAllocAsync) alloc_async;
    __typeof__(&cuMemAllocFromPoolAsync) alloc_pool;
    __typeof__(&cuMemAllocPitch_v2) pitch;
    __typeof__(&cuMemCreate) create;
    __typeof__(&cuMemFree_v2) free;
    __typeof__(&cuMemFreeAsync) free_async;
    __typeof__(&cuMemRelease) release;
    __typeof__(&cuMemGetInfo_v2) info;
    __typeof__(&cuDeviceTotalMem_v2) total;
    __typeof__(&cuLaunchKernel) launch;
    __typeof__(&cuGraphCreate) graph_create;
    __typeof__(&cuGraphAddEmptyNode) graph_add;
    __typeof__(&cuGraphInstantiateWithFlags) graph_instantiate;
    __typeof__(&cuGraphLaunch) graph_launch;
    __typeof__(&cuGetProcAddress) proc;
    __typeof__(&cuGetProcAddress_v2) proc_v2;
} cu;

/* The slot, the base name cuGetProcAddress takes, the exported name dlsym takes. */
#define FN(slot, base, exported) {(void **)&cu.slot, base, exported}
static const struct {
    void **slot;
    const char *base, *exported;
} g_fns[] = {
    FN(init, "cuInit", "cuInit"),
    FN(ctx_create, "cuCtxCreate", "cuCtxCreate_v2"),
    FN(alloc, "cuMemAlloc", "cuMemAlloc_v2"),
    FN(managed, "cuMemAllocManaged", "cuMemAllocManaged"),
    FN(alloc_async, "cuMemAllocAsync", "cuMemAllocAsync"),
    FN(alloc_pool, "cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync"),
    FN(pitch, "cuMemAllocPitch", "cuMemAllocPitch_v2"),
    FN(create, "cuMemCreate", "cuMemCreate"),
    FN(free, "cuMemFree", "cuMemFree_v2"),
    FN(free_async, "cuMemFreeAsync", "cuMemFreeAsync"),
    FN(release, "cuMemRelease", "cuMemRelease"),
    FN(info, "cuMemGetInfo", "cuMemGetInfo_v2"),
    FN(total, "cuDeviceTotalMem", "cuDeviceTotalMem_v2"),
    FN(launch, "cuLaunchKernel", "cuLaunchKernel"),
    FN(graph_create, "cuGraphCreate", "cuGraphCreate"),
    FN(graph_add, "cuGraphAddEmptyNode", "cuGraphAddEmptyNode"),
    FN(graph_instantiate, "cuGraphInstantiateWithFlags", "cuGraphInstantiateWithFlags"),
    FN(graph_launch, "cuGraphLaunch", "cuGraphLaunch"),
};

static void *g_lib;
static void *(*g_standin_proc)(const char *, int, cuuint64_t);
static cuuint64_t g_flags;

static void die(const char *what)
{
    fprintf(stderr, "probe: %s\n", what);
    exit(99);
}

static void resolve(const char *via)
{
    g_lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!g_lib)
        die(dlerror());
    cu.proc = (__typeof__(cu.proc))dlsym(g_lib, "cuGetProcAddress");
    cu.proc_v2 = (__typeof__(cu.proc_v2))dlsym(g_lib, "cuGetProcAddress_v2");
    g_standin_proc = (__typeof__(g_standin_proc))dlsym(g_lib, "standin_proc_address");
#ifdef PROBE_LINKED
    if (strcmp(via, "linked") == 0) {
        cu.init = cuInit, cu.ctx_create = cuCtxCreate_v2, cu.alloc = cuMemAlloc_v2;
        cu.managed = cuMemAllocManaged, cu.alloc_async = cuMemAllocAsync;
        cu.alloc_pool = cuMemAllocFromPoolAsync, cu.pitch = cuMemAllocPitch_v2;
        cu.create = cuMemCreate, cu.free = cuMemFree_v2, cu.free_async = cuMemFreeAsync;
        cu.release = cuMemRelease, cu.info = cuMemGetInfo_v2, cu.total = cuDeviceTotalMem_v2;
        cu.launch = cuLaunchKernel, cu.graph_create = cuGraphCreate;
        cu.graph_add = cuGraphAddEmptyNode, cu.graph_instantiate = cuGraphInstantiateWithFlags;
        cu.graph_launch = cuGraphLaunch;
        return;
    }
#endif
    for (size_t i = 0; i < sizeof g_fns / sizeof g_fns[0]; i++) {
        void *fn = NULL;
        if (strcmp(via, "dlsym") == 0)
            fn = dlsym(g_lib, g_fns[i].exported);
        else if (strcmp(via, "proc") == 0)
            cu.proc(g_fns[i].base, &fn, 12040, g_flags);
        else if (strcmp(via, "proc_v2") == 0)
            cu.proc_v2(g_fns[i].base, &fn, 12040, g_flags, NULL);
        else
            die("PROBE_VIA must be linked, dlsym, proc or proc_v2");
        if (!fn)
            die(g_fns[i].base);
        *g_fns[i].slot = fn;
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Allocations made so far, newest last, with the op that made them. */
static struct {
    char kind;
    unsigned long long ptr;
} g_allocs[1024];
static int g_nallocs;

static CUresult allocate(char kind, unsigned long long bytes)
{
    CUdeviceptr ptr = 0;
    CUmemAllocationProp prop = {CU_MEM_ALLOCATION_TYPE_PINNED, 0, CU_MEM_LOCATION_TYPE_DEVICE, 0,
                                NULL, {0}};
    CUresult r;
    switch (kind) {
    case 'a': r = cu.alloc(&ptr, bytes); break;
    case 'm': r = cu.managed(&ptr, bytes, 1); break;
    case 's': r = cu.alloc_async(&ptr, bytes, NULL); break;
    case 'p': r = cu.alloc_pool(&ptr, bytes, NULL, NULL); break;
    default: r = cu.create(&ptr, bytes, &prop, 0); break;
    }
    if (r == CUDA_SUCCESS && g_nallocs < 1024) {
        g_allocs[g_nallocs].kind = kind;
        g_allocs[g_nallocs++].ptr = ptr;
    }
    return r;
}

static CUresult release_latest(void)
{
    if (!g_nallocs)
        return CUDA_ERROR_INVALID_VALUE;
    g_nallocs--;
    unsigned long long ptr = g_allocs[g_nallocs].ptr;
    switch (g_allocs[g_nallocs].kind) {
    case 's': case 'p': return cu.free_async(ptr, NULL);
    case 'c': return cu.release(ptr);
    default: return cu.free(ptr);
    }
}

/* churn: each thread keeps up to 16 blocks, allocating or freeing one at random per step. */
static unsigned long long g_churn_iters, g_churn_bytes, g_refused;

static void *churn(void *arg)
{
    CUdeviceptr held[16];
    int n = 0;
    unsigned int seed = (unsigned int)(uintptr_t)arg;
    for (unsigned long long k = 0; k < g_churn_iters; k++) {
        if (n < 16 && (n == 0 || rand_r(&seed) % 2)) {
            CUresult r = cu.alloc(&held[n], g_churn_bytes);
            if (r == CUDA_SUCCESS)
                n++;
            else if (r == CUDA_ERROR_OUT_OF_MEMORY)
                __atomic_add_fetch(&g_refused, 1, __ATOMIC_RELAXED);
            else
                die("churn: alloc failed");
        } else {
            int i = (int)(rand_r(&seed) % (unsigned int)n);
            if (cu.free(held[i]))
                die("churn: free failed");
            held[i] = held[--n];
        }
    }
    while (n)
        if (cu.free(held[--n]))
            die("churn: free failed");
    return NULL;
}

static int run(int argc, char **argv)
{
    int i = 1;
    while (i < argc) {
        const char *op = argv[i++];
        const char *a1 = i < argc ? argv[i] : "0", *a2 = i + 1 < argc ? argv[i + 1] : "0";
        CUresult r;
        if (!strcmp(op, "alloc") || !strcmp(op, "managed") || !strcmp(op, "async") ||
            !strcmp(op, "pool") || !strcmp(op, "create")) {
            char kind = !strcmp(op, "async") ? 's' : !strcmp(op, "create") ? 'c' : op[0];
            printf("%s %d\n", op, allocate(kind, strtoull(a1, NULL, 10) * MIB));
            i++;
        } else if (!strcmp(op, "pitch")) {
            CUdeviceptr ptr = 0;
            size_t pitch = 0;
            r = cu.pitch(&ptr, &pitch, strtoull(a1, NULL, 10), strtoull(a2, NULL, 10), 4);
            if (r == CUDA_SUCCESS) {
                g_allocs[g_nallocs].kind = 'a';
                g_allocs[g_nallocs++].ptr = ptr;
            }
            printf("pitch %d %zu\n", r, pitch);
            i += 2;
        } else if (!strcmp(op, "free")) {
            printf("free %d\n", release_latest());
        } else if (!strcmp(op, "info")) {
            size_t f = 0, t = 0;
            r = cu.info(&f, &t);
            printf("info %d %zu %zu\n", r, f, t);
        } else if (!strcmp(op, "total")) {
            size_t t = 0;
            r = cu.total(&t, 0);
            printf("total %d %zu\n", r, t);
        } else if (!strcmp(op, "hold")) {
            char buf[64];
            printf("hold 0\n");
            fflush(stdout);
            while (read(0, buf, sizeof buf) > 0)
                ;
        } else if (!strcmp(op, "launch")) {
            double seconds = atof(a1), start = now_s(), t;
            unsigned long long n = 0;
            do {
                if (cu.launch(NULL, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL))
                    die("launch failed");
                n++;
            } while ((t = now_s() - start) < seconds);
            printf("launch 0 %llu %.6f\n", n, t);
            i++;
        } else if (!strcmp(op, "graph")) {
            CUgraph g;
            CUgraphNode node;
            CUgraphExec exec;
            int nodes = atoi(a1);
            double seconds = atof(a2), start, t = 0;
            unsigned long long n = 0;
            r = cu.graph_create(&g, 0);
            for (int k = 0; r == CUDA_SUCCESS && k < nodes; k++)
                r = cu.graph_add(&node, g, NULL, 0);
            if (r == CUDA_SUCCESS)
                r = cu.graph_instantiate(&exec, g, 0);
            start = now_s();
            do {
                if (r == CUDA_SUCCESS)
                    r = cu.graph_launch(exec, NULL);
                n++;
            } while (r == CUDA_SUCCESS && (t = now_s() - start) < seconds);
            printf("graph %d %llu %.6f\n", r, n, t);
            i += 2;
        } else if (!strcmp(op, "swapped")) {
            void *fn = NULL, *own = g_standin_proc ? g_standin_proc(a1, 12040, g_flags) : NULL;
            r = cu.proc(a1, &fn, 12040, g_flags);
            printf("swapped %d %d\n", r, fn != NULL && own != NULL && fn != own);
            i++;
        } else if (!strcmp(op, "next")) {
            void *next = dlsym(RTLD_NEXT, a1), *first = dlsym(RTLD_DEFAULT, a1);
            printf("next 0 %d\n", next != NULL && next == first);
            i++;
        } else if (!strcmp(op, "nvml")) {
            void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
            if (!lib)
                die(dlerror());
            __typeof__(&nvmlInit_v2) init = (__typeof__(init))dlsym(lib, "nvmlInit_v2");
            __typeof__(&nvmlDeviceGetHandleByIndex_v2) by_index =
                (__typeof__(by_index))dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
            __typeof__(&nvmlDeviceGetMemoryInfo) mem =
                (__typeof__(mem))dlsym(lib, "nvmlDeviceGetMemoryInfo");
            __typeof__(&nvmlDeviceGetMemoryInfo_v2) mem2 =
                (__typeof__(mem2))dlsym(lib, "nvmlDeviceGetMemoryInfo_v2");
            nvmlDevice_t dev;
            nvmlMemory_t m = {0, 0, 0};
            nvmlMemory_v2_t m2 = {0, 0, 0, 0, 0};
            r = init();
            if (!r)
                r = by_index((unsigned)atoi(a1), &dev);
            if (!r)
                r = mem(dev, &m);
            printf("nvml %d %llu %llu %llu\n", r, m.total, m.free, m.used);
            if (!r)
                r = mem2(dev, &m2);
            printf("nvml2 %d %llu %llu %llu\n", r, m2.total, m2.free, m2.used);
            i++;
        } else if (!strcmp(op, "lockdie")) {
            const char *path = getenv("GPUPOOL_SHARE_FILE");
            int fd = path ? open(path, O_RDWR) : -1;
            struct gs_share *sh = fd < 0 ? MAP_FAILED
                                         : mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                                                MAP_SHARED, fd, 0);
            if (sh == MAP_FAILED || !sh->h.mutex_ready)
                die("lockdie needs an initialised share file");
            printf("lockdie %d\n", pthread_mutex_lock(&sh->h.lock.mutex));
            fflush(stdout);
            _exit(0); /* the robust mutex is left owned by a dead process */
        } else if (!strcmp(op, "churn")) {
            int threads = atoi(a1);
            pthread_t tid[64];
            g_churn_iters = strtoull(a2, NULL, 10);
            g_churn_bytes = strtoull(i + 2 < argc ? argv[i + 2] : "4", NULL, 10) << 10;
            for (int t = 0; t < threads && t < 64; t++)
                pthread_create(&tid[t], NULL, churn, (void *)(uintptr_t)(t + 1));
            for (int t = 0; t < threads && t < 64; t++)
                pthread_join(tid[t], NULL);
            printf("churn 0 %llu\n", g_refused);
            i += 3;
        } else if (!strcmp(op, "benchalloc")) {
            unsigned long long n = strtoull(a1, NULL, 10), bytes = strtoull(a2, NULL, 10) << 10;
            CUdeviceptr ptr;
            double start = now_s();
            for (unsigned long long k = 0; k < n; k++)
                if (cu.alloc(&ptr, bytes) || cu.free(ptr))
                    die("alloc/free failed");
            printf("benchalloc 0 %.1f\n", (now_s() - start) * 1e9 / (double)n);
            i += 2;
        } else if (!strcmp(op, "benchlaunch")) {
            unsigned long long n = strtoull(a1, NULL, 10);
            double start = now_s();
            for (unsigned long long k = 0; k < n; k++)
                if (cu.launch(NULL, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL))
                    die("launch failed");
            printf("benchlaunch 0 %.1f\n", (now_s() - start) * 1e9 / (double)n);
            i++;
        } else {
            fprintf(stderr, "probe: unknown op %s\n", op);
            return 2;
        }
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *via = getenv("PROBE_VIA"), *flags = getenv("PROBE_FLAGS");
    CUcontext ctx;
#ifdef PROBE_LINKED
    if (!via)
        via = "linked";
#endif
    g_flags = flags ? strtoull(flags, NULL, 10) : 0;
    resolve(via ? via : "dlsym");
    if (cu.init(0) || cu.ctx_create(&ctx, 0, 0))
        die("cannot initialise the driver");
    return run(argc, argv);
}
