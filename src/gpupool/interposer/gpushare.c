/* gpushare.c - gpupool's GPU-sharing interposer: LD_PRELOAD it into a job's processes.
 *
 * It exports the CUDA driver entry points that allocate or free device memory, report memory
 * sizes, or launch work, and NVML's memory queries. Each one checks the job's memory ledger
 * or its launch pace (gs_account.c) and calls the real function.
 *
 * A program can reach the driver in three ways, and each leads here:
 *  - linked against libcuda: the dynamic linker binds the names to this library, which is
 *    loaded first;
 *  - dlopen("libcuda.so.1") + dlsym(handle, name): dlsym on a handle never looks at preloaded
 *    libraries, so this library defines dlsym too and answers with its own function for a
 *    name it intercepts (after checking that the handle has the name at all);
 *  - cuGetProcAddress (CUDA 11.3+, how the CUDA 12 runtime gets every entry point): the real
 *    one is asked, and an answer that is one of the intercepted functions is swapped for ours.
 * (gs_resolve.c does the last two, and finds the real functions.)
 *
 * Without GPUPOOL_GPU_MEMORY_LIMIT_MIB (and no limit in the share file) and without a compute
 * share below 1, every function is a plain pass-through: an atomic load and a branch.
 */
#define _GNU_SOURCE
#include "cuda_abi.h"
#include "gpushare.h"
#include "gs_hooks.h"

#include <stdlib.h>
#include <string.h>

/* Define our function gs_NAME and export it as NAME. The export is an alias, so our own
 * references (the hook table) always mean our function, never another library's. */
#define GS_EXPORT(ret, name, params)                                                            \
    static ret gs_##name params;                                                                \
    __attribute__((visibility("default"), alias("gs_" #name))) ret name params;                  \
    static ret gs_##name params

#define REAL(name) ((__typeof__(&name))gs_real(H_##name))

/* ---- common steps of the hooks ----------------------------------------------------- */

static int limited(void) { return gs_config()->limit != 0; }

static int current_device(void)
{
    CUresult (*get)(CUdevice *) = (CUresult(*)(CUdevice *))gs_helper(R_CTX_GET_DEVICE);
    CUdevice dev = 0;
    if (!get || get(&dev) != CUDA_SUCCESS)
        return 0;
    return dev;
}

static CUresult admit(int dev, uint64_t bytes)
{
    return gs_reserve(dev, bytes) ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

/* After the driver answered an admitted allocation: keep its size, or give the room back. */
static CUresult settle(CUresult r, enum gs_map_id map, uint64_t key, uint64_t bytes, int dev)
{
    if (r != CUDA_SUCCESS) {
        gs_unreserve(dev, bytes);
        return r;
    }
    if (!gs_track(map, key, bytes, dev)) {
        /* No host memory for the table: an untracked allocation would never be given back. */
        if (map == GS_HANDLES) {
            if (REAL(cuMemRelease))
                REAL(cuMemRelease)(key);
        } else if (REAL(cuMemFree_v2)) {
            REAL(cuMemFree_v2)(key);
        }
        gs_unreserve(dev, bytes);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
}

/* Before a free: forget the allocation first (its address may be reused the moment the
 * driver frees it); after: give its room back, or remember it again if the free failed. */
struct forgotten {
    int had, dev;
    uint64_t size;
};

static struct forgotten forget(enum gs_map_id map, uint64_t key)
{
    struct forgotten f = {0, 0, 0};
    if (limited())
        f.had = gs_untrack(map, key, &f.size, &f.dev);
    return f;
}

static CUresult freed(CUresult r, enum gs_map_id map, uint64_t key, struct forgotten f)
{
    if (f.had) {
        if (r == CUDA_SUCCESS)
            gs_unreserve(f.dev, f.size);
        else
            gs_track(map, key, f.size, f.dev);
    }
    return r;
}

/* The slice as the card: total = min(limit, card), free = what the job has left of it. */
static void slice(int dev, uint64_t *free_b, uint64_t *total_b)
{
    uint64_t limit = gs_config()->limit, used = gs_used(dev);
    uint64_t total = limit < *total_b ? limit : *total_b;
    uint64_t left = used < total ? total - used : 0;
    *free_b = left < *free_b ? left : *free_b;
    *total_b = total;
}

static void pace(uint64_t launches)
{
    if (gs_config()->interval_ns)
        gs_pace(current_device(), launches);
}

#define NEED(fn) \
    if (!(fn))   \
    return CUDA_ERROR_NOT_INITIALIZED

/* ---- allocations ------------------------------------------------------------------- */

GS_EXPORT(CUresult, cuMemAlloc_v2, (CUdeviceptr *dptr, size_t bytes))
{
    __typeof__(&cuMemAlloc_v2) fn = REAL(cuMemAlloc_v2);
    NEED(fn);
    if (!limited())
        return fn(dptr, bytes);
    int dev = current_device();
    if (admit(dev, bytes))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = fn(dptr, bytes);
    return settle(r, GS_PTRS, r ? 0 : *dptr, bytes, dev);
}

GS_EXPORT(CUresult, cuMemAlloc, (CUdeviceptr_v1 *dptr, unsigned int bytes))
{
    __typeof__(&cuMemAlloc) fn = REAL(cuMemAlloc);
    NEED(fn);
    if (!limited())
        return fn(dptr, bytes);
    int dev = current_device();
    if (admit(dev, bytes))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = fn(dptr, bytes);
    return settle(r, GS_PTRS, r ? 0 : *dptr, bytes, dev);
}

GS_EXPORT(CUresult, cuMemAllocManaged, (CUdeviceptr *dptr, size_t bytes, unsigned int flags))
{
    /* Managed memory can migrate and oversubscribe; it is counted on the current device. */
    __typeof__(&cuMemAllocManaged) fn = REAL(cuMemAllocManaged);
    NEED(fn);
    if (!limited())
        return fn(dptr, bytes, flags);
    int dev = current_device();
    if (admit(dev, bytes))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = fn(dptr, bytes, flags);
    return settle(r, GS_PTRS, r ? 0 : *dptr, bytes, dev);
}

#define ALLOC_ASYNC(name)                                                                       \
    GS_EXPORT(CUresult, name, (CUdeviceptr * dptr, size_t bytes, CUstream stream))              \
    {                                                                                           \
        __typeof__(&name) fn = REAL(name);                                                 \
        NEED(fn);                                                                               \
        if (!limited())                                                                         \
            return fn(dptr, bytes, stream);                                                     \
        int dev = current_device();                                                             \
        if (admit(dev, bytes))                                                                  \
            return CUDA_ERROR_OUT_OF_MEMORY;                                                    \
        CUresult r = fn(dptr, bytes, stream);                                                   \
        return settle(r, GS_PTRS, r ? 0 : *dptr, bytes, dev);                                  \
    }
ALLOC_ASYNC(cuMemAllocAsync)
ALLOC_ASYNC(cuMemAllocAsync_ptsz)

#define ALLOC_FROM_POOL(name)                                                                   \
    GS_EXPORT(CUresult, name,                                                                   \
              (CUdeviceptr * dptr, size_t bytes, CUmemoryPool pool, CUstream stream))           \
    {                                                                                           \
        __typeof__(&name) fn = REAL(name);                                                 \
        NEED(fn);                                                                               \
        if (!limited())                                                                         \
            return fn(dptr, bytes, pool, stream);                                               \
        int dev = current_device();                                                             \
        if (admit(dev, bytes))                                                                  \
            return CUDA_ERROR_OUT_OF_MEMORY;                                                    \
        CUresult r = fn(dptr, bytes, pool, stream);                                             \
        return settle(r, GS_PTRS, r ? 0 : *dptr, bytes, dev);                                  \
    }
ALLOC_FROM_POOL(cuMemAllocFromPoolAsync)
ALLOC_FROM_POOL(cuMemAllocFromPoolAsync_ptsz)

/* The driver picks the pitch, so the room is reserved for the usual 512-byte alignment and
 * corrected once the pitch is known. */
static uint64_t pitch_guess(uint64_t width, uint64_t height)
{
    uint64_t row = (width + 511) & ~(uint64_t)511;
    return row < width || (height && row > UINT64_MAX / height) ? UINT64_MAX : row * height;
}

static CUresult pitch_settle(CUresult r, uint64_t ptr, uint64_t guess, uint64_t actual, int dev)
{
    if (r == CUDA_SUCCESS && actual > guess && !gs_reserve(dev, actual - guess)) {
        if (REAL(cuMemFree_v2))
            REAL(cuMemFree_v2)(ptr);
        gs_unreserve(dev, guess);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (r == CUDA_SUCCESS && actual < guess)
        gs_unreserve(dev, guess - actual);
    return settle(r, GS_PTRS, ptr, r ? guess : actual, dev);
}

GS_EXPORT(CUresult, cuMemAllocPitch_v2,
          (CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height, unsigned int elem))
{
    __typeof__(&cuMemAllocPitch_v2) fn = REAL(cuMemAllocPitch_v2);
    NEED(fn);
    if (!limited())
        return fn(dptr, pitch, width, height, elem);
    int dev = current_device();
    uint64_t guess = pitch_guess(width, height);
    if (admit(dev, guess))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = fn(dptr, pitch, width, height, elem);
    return pitch_settle(r, r ? 0 : *dptr, guess, r ? 0 : (uint64_t)*pitch * height, dev);
}

GS_EXPORT(CUresult, cuMemAllocPitch,
          (CUdeviceptr_v1 *dptr, unsigned int *pitch, unsigned int width, unsigned int height,
           unsigned int elem))
{
    __typeof__(&cuMemAllocPitch) fn = REAL(cuMemAllocPitch);
    NEED(fn);
    if (!limited())
        return fn(dptr, pitch, width, height, elem);
    int dev = current_device();
    uint64_t guess = pitch_guess(width, height);
    if (admit(dev, guess))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = fn(dptr, pitch, width, height, elem);
    return pitch_settle(r, r ? 0 : *dptr, guess, r ? 0 : (uint64_t)*pitch * height, dev);
}

GS_EXPORT(CUresult, cuMemCreate,
          (CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop,
           unsigned long long flags))
{
    __typeof__(&cuMemCreate) fn = REAL(cuMemCreate);
    NEED(fn);
    /* Physical memory placed on the host (CUDA 12.2+ host locations) is not the card's. */
    if (!limited() || !prop || prop->locationType != CU_MEM_LOCATION_TYPE_DEVICE)
        return fn(handle, size, prop, flags);
    int dev = prop->locationId;
    if (admit(dev, size))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = fn(handle, size, prop, flags);
    return settle(r, GS_HANDLES, r ? 0 : *handle, size, dev);
}

/* ---- frees ------------------------------------------------------------------------- */

GS_EXPORT(CUresult, cuMemFree_v2, (CUdeviceptr dptr))
{
    __typeof__(&cuMemFree_v2) fn = REAL(cuMemFree_v2);
    NEED(fn);
    struct forgotten f = forget(GS_PTRS, dptr);
    return freed(fn(dptr), GS_PTRS, dptr, f);
}

GS_EXPORT(CUresult, cuMemFree, (CUdeviceptr_v1 dptr))
{
    __typeof__(&cuMemFree) fn = REAL(cuMemFree);
    NEED(fn);
    struct forgotten f = forget(GS_PTRS, dptr);
    return freed(fn(dptr), GS_PTRS, dptr, f);
}

/* Stream-ordered frees are counted when asked for, not when the stream reaches them. */
#define FREE_ASYNC(name)                                                                        \
    GS_EXPORT(CUresult, name, (CUdeviceptr dptr, CUstream stream))                              \
    {                                                                                           \
        __typeof__(&name) fn = REAL(name);                                                 \
        NEED(fn);                                                                               \
        struct forgotten f = forget(GS_PTRS, dptr);                                             \
        return freed(fn(dptr, stream), GS_PTRS, dptr, f);                                       \
    }
FREE_ASYNC(cuMemFreeAsync)
FREE_ASYNC(cuMemFreeAsync_ptsz)

GS_EXPORT(CUresult, cuMemRelease, (CUmemGenericAllocationHandle handle))
{
    __typeof__(&cuMemRelease) fn = REAL(cuMemRelease);
    NEED(fn);
    struct forgotten f = forget(GS_HANDLES, handle);
    return freed(fn(handle), GS_HANDLES, handle, f);
}

/* ---- sizes ------------------------------------------------------------------------- */

GS_EXPORT(CUresult, cuMemGetInfo_v2, (size_t *free_b, size_t *total_b))
{
    __typeof__(&cuMemGetInfo_v2) fn = REAL(cuMemGetInfo_v2);
    NEED(fn);
    CUresult r = fn(free_b, total_b);
    if (r == CUDA_SUCCESS && limited() && free_b && total_b) {
        uint64_t f = *free_b, t = *total_b;
        slice(current_device(), &f, &t);
        *free_b = f;
        *total_b = t;
    }
    return r;
}

GS_EXPORT(CUresult, cuMemGetInfo, (unsigned int *free_b, unsigned int *total_b))
{
    __typeof__(&cuMemGetInfo) fn = REAL(cuMemGetInfo);
    NEED(fn);
    CUresult r = fn(free_b, total_b);
    if (r == CUDA_SUCCESS && limited() && free_b && total_b) {
        uint64_t f = *free_b, t = *total_b;
        slice(current_device(), &f, &t);
        *free_b = (unsigned int)f; /* both only shrink: they still fit */
        *total_b = (unsigned int)t;
    }
    return r;
}

GS_EXPORT(CUresult, cuDeviceTotalMem_v2, (size_t *bytes, CUdevice dev))
{
    __typeof__(&cuDeviceTotalMem_v2) fn = REAL(cuDeviceTotalMem_v2);
    NEED(fn);
    CUresult r = fn(bytes, dev);
    uint64_t limit = gs_config()->limit;
    if (r == CUDA_SUCCESS && bytes && limit && limit < *bytes)
        *bytes = limit;
    return r;
}

GS_EXPORT(CUresult, cuDeviceTotalMem, (unsigned int *bytes, CUdevice dev))
{
    __typeof__(&cuDeviceTotalMem) fn = REAL(cuDeviceTotalMem);
    NEED(fn);
    CUresult r = fn(bytes, dev);
    uint64_t limit = gs_config()->limit;
    if (r == CUDA_SUCCESS && bytes && limit && limit < *bytes)
        *bytes = (unsigned int)limit;
    return r;
}

/* NVML names physical GPUs; the ledger counts by the job's device ordinal, which is the
 * position of the GPU's index in CUDA_VISIBLE_DEVICES. -1: not a GPU of this job. */
static int nvml_ordinal(nvmlDevice_t device)
{
    nvmlReturn_t (*get_index)(nvmlDevice_t, unsigned int *) =
        (nvmlReturn_t(*)(nvmlDevice_t, unsigned int *))gs_helper(R_NVML_GET_INDEX);
    unsigned int index;
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    if (!get_index || get_index(device, &index) != NVML_SUCCESS)
        return -1;
    if (!visible)
        return (int)index;
    int ordinal = 0, entries = 0, numeric = 1;
    for (const char *p = visible; *p; ordinal++) {
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        entries++;
        if (end == p || (*end && *end != ','))
            numeric = 0; /* a UUID or MIG name */
        else if (v == index)
            return ordinal;
        p = strchr(p, ',');
        if (!p)
            break;
        p++;
    }
    return !numeric && entries == 1 ? 0 : -1;
}

GS_EXPORT(nvmlReturn_t, nvmlDeviceGetMemoryInfo, (nvmlDevice_t device, nvmlMemory_t *memory))
{
    __typeof__(&nvmlDeviceGetMemoryInfo) fn = REAL(nvmlDeviceGetMemoryInfo);
    if (!fn)
        return NVML_ERROR_UNINITIALIZED;
    nvmlReturn_t r = fn(device, memory);
    int ordinal;
    if (r == NVML_SUCCESS && memory && limited() && (ordinal = nvml_ordinal(device)) >= 0) {
        uint64_t f = memory->free, t = memory->total;
        slice(ordinal, &f, &t);
        memory->total = t;
        memory->free = f;
        memory->used = t - f;
    }
    return r;
}

GS_EXPORT(nvmlReturn_t, nvmlDeviceGetMemoryInfo_v2,
          (nvmlDevice_t device, nvmlMemory_v2_t *memory))
{
    __typeof__(&nvmlDeviceGetMemoryInfo_v2) fn = REAL(nvmlDeviceGetMemoryInfo_v2);
    if (!fn)
        return NVML_ERROR_UNINITIALIZED;
    nvmlReturn_t r = fn(device, memory);
    int ordinal;
    if (r == NVML_SUCCESS && memory && limited() && (ordinal = nvml_ordinal(device)) >= 0) {
        uint64_t f = memory->free, t = memory->total;
        slice(ordinal, &f, &t);
        memory->total = t;
        memory->free = f;
        memory->used = t - f > memory->reserved ? t - f - memory->reserved : 0;
    }
    return r;
}

/* ---- launches ---------------------------------------------------------------------- */

#define LAUNCH(name, params, args)                                                              \
    GS_EXPORT(CUresult, name, params)                                                           \
    {                                                                                           \
        __typeof__(&name) fn = REAL(name);                                                 \
        NEED(fn);                                                                               \
        pace(1);                                                                                \
        return fn args;                                                                         \
    }
#define KERNEL_ARGS (f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ,           \
                     sharedMemBytes, stream, kernelParams, extra)
#define COOPERATIVE_ARGS (f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ,      \
                          sharedMemBytes, stream, kernelParams)
LAUNCH(cuLaunchKernel, (GS_LAUNCH_KERNEL_ARGS), KERNEL_ARGS)
LAUNCH(cuLaunchKernel_ptsz, (GS_LAUNCH_KERNEL_ARGS), KERNEL_ARGS)
LAUNCH(cuLaunchCooperativeKernel, (GS_LAUNCH_COOPERATIVE_ARGS), COOPERATIVE_ARGS)
LAUNCH(cuLaunchCooperativeKernel_ptsz, (GS_LAUNCH_COOPERATIVE_ARGS), COOPERATIVE_ARGS)
LAUNCH(cuLaunchKernelEx,
       (const CUlaunchConfig *config, CUfunction f, void **kernelParams, void **extra),
       (config, f, kernelParams, extra))
LAUNCH(cuLaunchKernelEx_ptsz,
       (const CUlaunchConfig *config, CUfunction f, void **kernelParams, void **extra),
       (config, f, kernelParams, extra))

/* A graph launch is charged one launch per node of the graph it was instantiated from. */
#define GRAPH_LAUNCH(name)                                                                      \
    GS_EXPORT(CUresult, name, (CUgraphExec exec, CUstream stream))                              \
    {                                                                                           \
        __typeof__(&name) fn = REAL(name);                                                 \
        NEED(fn);                                                                               \
        if (gs_config()->interval_ns)                                                           \
            pace(gs_lookup(GS_GRAPHS, (uint64_t)(uintptr_t)exec, 1));                           \
        return fn(exec, stream);                                                                \
    }
GRAPH_LAUNCH(cuGraphLaunch)
GRAPH_LAUNCH(cuGraphLaunch_ptsz)

static CUresult instantiated(CUresult r, CUgraphExec *exec, CUgraph graph)
{
    CUresult (*nodes_of)(CUgraph, CUgraphNode *, size_t *) =
        (CUresult(*)(CUgraph, CUgraphNode *, size_t *))gs_helper(R_GRAPH_GET_NODES);
    size_t nodes = 0;
    if (r == CUDA_SUCCESS && exec && gs_config()->interval_ns && nodes_of &&
        nodes_of(graph, NULL, &nodes) == CUDA_SUCCESS && nodes > 1)
        gs_track(GS_GRAPHS, (uint64_t)(uintptr_t)*exec, nodes, 0);
    return r;
}

GS_EXPORT(CUresult, cuGraphInstantiate_v2,
          (CUgraphExec *exec, CUgraph graph, CUgraphNode *errorNode, char *log, size_t size))
{
    __typeof__(&cuGraphInstantiate_v2) fn = REAL(cuGraphInstantiate_v2);
    NEED(fn);
    return instantiated(fn(exec, graph, errorNode, log, size), exec, graph);
}

GS_EXPORT(CUresult, cuGraphInstantiateWithFlags,
          (CUgraphExec *exec, CUgraph graph, unsigned long long flags))
{
    __typeof__(&cuGraphInstantiateWithFlags) fn = REAL(cuGraphInstantiateWithFlags);
    NEED(fn);
    return instantiated(fn(exec, graph, flags), exec, graph);
}

#define INSTANTIATE_WITH_PARAMS(name)                                                           \
    GS_EXPORT(CUresult, name,                                                                   \
              (CUgraphExec * exec, CUgraph graph, CUDA_GRAPH_INSTANTIATE_PARAMS * params))       \
    {                                                                                           \
        __typeof__(&name) fn = REAL(name);                                                 \
        NEED(fn);                                                                               \
        return instantiated(fn(exec, graph, params), exec, graph);                              \
    }
INSTANTIATE_WITH_PARAMS(cuGraphInstantiateWithParams)
INSTANTIATE_WITH_PARAMS(cuGraphInstantiateWithParams_ptsz)

GS_EXPORT(CUresult, cuGraphExecDestroy, (CUgraphExec exec))
{
    __typeof__(&cuGraphExecDestroy) fn = REAL(cuGraphExecDestroy);
    uint64_t nodes;
    int dev;
    NEED(fn);
    gs_untrack(GS_GRAPHS, (uint64_t)(uintptr_t)exec, &nodes, &dev);
    return fn(exec);
}

GS_EXPORT(CUresult, cuGetProcAddress,
          (const char *symbol, void **pfn, int version, cuuint64_t flags))
{
    __typeof__(&cuGetProcAddress) fn = REAL(cuGetProcAddress);
    NEED(fn);
    CUresult r = fn(symbol, pfn, version, flags);
    if (r == CUDA_SUCCESS && pfn)
        *pfn = gs_swap_answer(symbol, *pfn, version, flags);
    return r;
}

GS_EXPORT(CUresult, cuGetProcAddress_v2,
          (const char *symbol, void **pfn, int version, cuuint64_t flags,
           CUdriverProcAddressQueryResult *status))
{
    __typeof__(&cuGetProcAddress_v2) fn = REAL(cuGetProcAddress_v2);
    NEED(fn);
    CUresult r = fn(symbol, pfn, version, flags, status);
    if (r == CUDA_SUCCESS && pfn)
        *pfn = gs_swap_answer(symbol, *pfn, version, flags);
    return r;
}

/* ---- the hook table ---------------------------------------------------------------- */

void *const gs_wrappers[H_COUNT] = {
#define X(name, lib) (void *)gs_##name,
    GS_HOOKS(X)
#undef X
};
