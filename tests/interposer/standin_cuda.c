/* standin_cuda.c - a stand-in for libcuda.so.1, so the interposer can be tested without a GPU.
 *
 * The used subset of the driver API over host memory: an 80 GiB "card" (STANDIN_TOTAL_MIB),
 * allocations are lazily backed anonymous mappings (MAP_NORESERVE, so a 10 GiB allocation
 * costs no RAM until touched; below 1 MiB plain malloc), kernels do nothing but keep the
 * caller busy for STANDIN_KERNEL_US microseconds (a launch is synchronous here), graphs are
 * node counters, and cuGetProcAddress answers from its own table. Build with -Wl,-Bsymbolic so that this
 * library's references to its own functions (that table) are not diverted to the interposer.
 */
#define _GNU_SOURCE
#include "cuda_abi.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096u
#define SMALL (1u << 20)
#define BLOCK_MAGIC 0x5354414e44494e21ULL /* "STANDIN!" */

static unsigned long long g_total = 80ULL << 30;
static unsigned long long g_used;
static unsigned long long g_launches;
static unsigned int g_kernel_us;
static int g_devices = 8;
static __thread int t_device;

struct block {
    unsigned long long magic, size;
};

struct graph {
    size_t nodes;
};

static unsigned long long env_ull(const char *name, unsigned long long dflt)
{
    const char *s = getenv(name);
    return s && *s ? strtoull(s, NULL, 10) : dflt;
}

CUresult cuInit(unsigned int flags)
{
    if (flags)
        return CUDA_ERROR_INVALID_VALUE;
    g_total = env_ull("STANDIN_TOTAL_MIB", 80 * 1024) << 20;
    g_kernel_us = (unsigned int)env_ull("STANDIN_KERNEL_US", 0);
    g_devices = (int)env_ull("STANDIN_DEVICES", 8);
    return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int *version)
{
    *version = 12040;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int *count)
{
    *count = g_devices;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice *device, int ordinal)
{
    if (ordinal < 0 || ordinal >= g_devices)
        return CUDA_ERROR_INVALID_VALUE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

CUresult cuCtxCreate_v2(CUcontext *ctx, unsigned int flags, CUdevice dev)
{
    (void)flags;
    if (dev < 0 || dev >= g_devices)
        return CUDA_ERROR_INVALID_VALUE;
    t_device = dev;
    *ctx = (CUcontext)(uintptr_t)(dev + 1);
    return CUDA_SUCCESS;
}

CUresult cuCtxGetDevice(CUdevice *device)
{
    *device = t_device;
    return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    if (!bytes || dev < 0 || dev >= g_devices)
        return CUDA_ERROR_INVALID_VALUE;
    *bytes = g_total;
    return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem(unsigned int *bytes, CUdevice dev)
{
    size_t total;
    CUresult r = cuDeviceTotalMem_v2(&total, dev);
    if (r == CUDA_SUCCESS)
        *bytes = total > 0xffffffffu ? 0xffffffffu : (unsigned int)total;
    return r;
}

CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes)
{
    if (!free_bytes || !total_bytes)
        return CUDA_ERROR_INVALID_VALUE;
    *total_bytes = g_total;
    *free_bytes = g_total - __atomic_load_n(&g_used, __ATOMIC_RELAXED);
    return CUDA_SUCCESS;
}

CUresult cuMemGetInfo(unsigned int *free_bytes, unsigned int *total_bytes)
{
    size_t f, t;
    CUresult r = cuMemGetInfo_v2(&f, &t);
    if (r == CUDA_SUCCESS) {
        *free_bytes = f > 0xffffffffu ? 0xffffffffu : (unsigned int)f;
        *total_bytes = t > 0xffffffffu ? 0xffffffffu : (unsigned int)t;
    }
    return r;
}

/* ---- memory ---------------------------------------------------------------------- */

static CUresult host_alloc(unsigned long long bytes, unsigned long long *out)
{
    unsigned long long used = __atomic_load_n(&g_used, __ATOMIC_RELAXED);
    if (!out || !bytes)
        return CUDA_ERROR_INVALID_VALUE;
    do {
        if (bytes > g_total - used)
            return CUDA_ERROR_OUT_OF_MEMORY;
    } while (!__atomic_compare_exchange_n(&g_used, &used, used + bytes, 1, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    /* small blocks from malloc (cheap, for the benchmark), large ones lazily mapped */
    char *base = bytes < SMALL ? aligned_alloc(PAGE, PAGE + ((bytes + PAGE - 1) & ~(PAGE - 1)))
                               : mmap(NULL, bytes + PAGE, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (!base || base == MAP_FAILED) {
        __atomic_sub_fetch(&g_used, bytes, __ATOMIC_RELAXED);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    struct block *b = (struct block *)base;
    b->magic = BLOCK_MAGIC;
    b->size = bytes;
    *out = (unsigned long long)(uintptr_t)(base + PAGE);
    return CUDA_SUCCESS;
}

static CUresult host_free(unsigned long long ptr)
{
    if (!ptr || ptr % PAGE)
        return CUDA_ERROR_INVALID_VALUE;
    struct block *b = (struct block *)(uintptr_t)(ptr - PAGE);
    if (b->magic != BLOCK_MAGIC)
        return CUDA_ERROR_INVALID_VALUE;
    unsigned long long size = b->size;
    b->magic = 0;
    if (size < SMALL)
        free(b);
    else
        munmap(b, size + PAGE);
    __atomic_sub_fetch(&g_used, size, __ATOMIC_RELAXED);
    return CUDA_SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes) { return host_alloc(bytes, dptr); }

CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes, unsigned int flags)
{
    (void)flags;
    return host_alloc(bytes, dptr);
}

CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes, CUstream stream)
{
    (void)stream;
    return host_alloc(bytes, dptr);
}

CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream stream)
{
    return cuMemAllocAsync(dptr, bytes, stream);
}

CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool,
                                 CUstream stream)
{
    (void)pool;
    (void)stream;
    return host_alloc(bytes, dptr);
}

CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool,
                                      CUstream stream)
{
    return cuMemAllocFromPoolAsync(dptr, bytes, pool, stream);
}

CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
                            unsigned int elem)
{
    if (!pitch || (elem != 4 && elem != 8 && elem != 16))
        return CUDA_ERROR_INVALID_VALUE;
    *pitch = (width + 511) & ~(size_t)511;
    return host_alloc((unsigned long long)*pitch * height, dptr);
}

CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                     const CUmemAllocationProp *prop, unsigned long long flags)
{
    if (!prop || flags || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED)
        return CUDA_ERROR_INVALID_VALUE;
    return host_alloc(size, handle);
}

CUresult cuMemFree_v2(CUdeviceptr dptr) { return host_free(dptr); }

CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream stream)
{
    (void)stream;
    return host_free(dptr);
}

CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream stream)
{
    return cuMemFreeAsync(dptr, stream);
}

CUresult cuMemRelease(CUmemGenericAllocationHandle handle) { return host_free(handle); }

/* The 32-bit legacy entry points cannot hold a 64-bit host address. */
CUresult cuMemAlloc(CUdeviceptr_v1 *dptr, unsigned int bytes)
{
    (void)dptr;
    (void)bytes;
    return CUDA_ERROR_NOT_SUPPORTED;
}

CUresult cuMemAllocPitch(CUdeviceptr_v1 *dptr, unsigned int *pitch, unsigned int width,
                         unsigned int height, unsigned int elem)
{
    (void)dptr, (void)pitch, (void)width, (void)height, (void)elem;
    return CUDA_ERROR_NOT_SUPPORTED;
}

CUresult cuMemFree(CUdeviceptr_v1 dptr)
{
    (void)dptr;
    return CUDA_ERROR_NOT_SUPPORTED;
}

/* ---- launches -------------------------------------------------------------------- */

static void run_kernels(unsigned long long kernels)
{
    struct timespec ts;
    __atomic_add_fetch(&g_launches, kernels, __ATOMIC_RELAXED);
    if (!g_kernel_us)
        return;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long end = (unsigned long long)ts.tv_sec * 1000000000ULL +
                             (unsigned long long)ts.tv_nsec + kernels * g_kernel_us * 1000ULL;
    do /* busy: the stand-in GPU is this thread */
        clock_gettime(CLOCK_MONOTONIC, &ts);
    while ((unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec < end);
}

CUresult cuLaunchKernel(GS_LAUNCH_KERNEL_ARGS)
{
    (void)f, (void)gridDimX, (void)gridDimY, (void)gridDimZ, (void)blockDimX, (void)blockDimY;
    (void)blockDimZ, (void)sharedMemBytes, (void)stream, (void)kernelParams, (void)extra;
    run_kernels(1);
    return CUDA_SUCCESS;
}

CUresult cuLaunchKernel_ptsz(GS_LAUNCH_KERNEL_ARGS)
{
    return cuLaunchKernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ,
                          sharedMemBytes, stream, kernelParams, extra);
}

CUresult cuLaunchCooperativeKernel(GS_LAUNCH_COOPERATIVE_ARGS)
{
    return cuLaunchKernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ,
                          sharedMemBytes, stream, kernelParams, NULL);
}

CUresult cuLaunchCooperativeKernel_ptsz(GS_LAUNCH_COOPERATIVE_ARGS)
{
    return cuLaunchKernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ,
                          sharedMemBytes, stream, kernelParams, NULL);
}

CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f, void **kernelParams,
                          void **extra)
{
    (void)config, (void)f, (void)kernelParams, (void)extra;
    run_kernels(1);
    return CUDA_SUCCESS;
}

CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **kernelParams,
                               void **extra)
{
    return cuLaunchKernelEx(config, f, kernelParams, extra);
}

/* ---- graphs ---------------------------------------------------------------------- */

CUresult cuGraphCreate(CUgraph *graph, unsigned int flags)
{
    struct graph *g = calloc(1, sizeof *g);
    if (flags || !g) {
        free(g);
        return flags ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_OUT_OF_MEMORY;
    }
    *graph = (CUgraph)g;
    return CUDA_SUCCESS;
}

CUresult cuGraphAddEmptyNode(CUgraphNode *node, CUgraph graph, const CUgraphNode *deps,
                             size_t numDeps)
{
    struct graph *g = (struct graph *)graph;
    (void)deps, (void)numDeps;
    *node = (CUgraphNode)(uintptr_t)++g->nodes;
    return CUDA_SUCCESS;
}

CUresult cuGraphGetNodes(CUgraph graph, CUgraphNode *nodes, size_t *numNodes)
{
    struct graph *g = (struct graph *)graph;
    if (!g || !numNodes)
        return CUDA_ERROR_INVALID_VALUE;
    if (nodes)
        for (size_t i = 0; i < *numNodes && i < g->nodes; i++)
            nodes[i] = (CUgraphNode)(uintptr_t)(i + 1);
    *numNodes = g->nodes;
    return CUDA_SUCCESS;
}

CUresult cuGraphInstantiateWithFlags(CUgraphExec *exec, CUgraph graph, unsigned long long flags)
{
    struct graph *g = (struct graph *)graph, *e = malloc(sizeof *e);
    (void)flags;
    if (!e)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *e = *g;
    *exec = (CUgraphExec)e;
    return CUDA_SUCCESS;
}

CUresult cuGraphInstantiate_v2(CUgraphExec *exec, CUgraph graph, CUgraphNode *errorNode,
                               char *logBuffer, size_t bufferSize)
{
    (void)errorNode, (void)logBuffer, (void)bufferSize;
    return cuGraphInstantiateWithFlags(exec, graph, 0);
}

CUresult cuGraphInstantiateWithParams(CUgraphExec *exec, CUgraph graph,
                                      CUDA_GRAPH_INSTANTIATE_PARAMS *params)
{
    (void)params;
    return cuGraphInstantiateWithFlags(exec, graph, 0);
}

CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *exec, CUgraph graph,
                                           CUDA_GRAPH_INSTANTIATE_PARAMS *params)
{
    return cuGraphInstantiateWithParams(exec, graph, params);
}

CUresult cuGraphExecDestroy(CUgraphExec exec)
{
    free(exec);
    return CUDA_SUCCESS;
}

CUresult cuGraphLaunch(CUgraphExec exec, CUstream stream)
{
    (void)stream;
    run_kernels(((struct graph *)exec)->nodes);
    return CUDA_SUCCESS;
}

CUresult cuGraphLaunch_ptsz(CUgraphExec exec, CUstream stream)
{
    return cuGraphLaunch(exec, stream);
}

/* ---- cuGetProcAddress ------------------------------------------------------------ */

struct proc {
    const char *name;
    void *legacy, *v2, *ptsz;
    int v2_from; /* the CUDA version from which the name means the v2 function */
};

#define P(n) {#n, (void *)n, NULL, NULL, 0}
#define PV2(n, from) {#n, (void *)n, (void *)n##_v2, NULL, from}
#define PPT(n) {#n, (void *)n, NULL, (void *)n##_ptsz, 0}
static const struct proc g_procs[] = {
    P(cuInit), P(cuDriverGetVersion), P(cuDeviceGet), P(cuDeviceGetCount), P(cuCtxGetDevice),
    {"cuCtxCreate", (void *)cuCtxCreate_v2, NULL, NULL, 0},
    PV2(cuDeviceTotalMem, 3020), PV2(cuMemGetInfo, 3020), PV2(cuMemAlloc, 3020),
    PV2(cuMemAllocPitch, 3020), PV2(cuMemFree, 3020), P(cuMemAllocManaged),
    PPT(cuMemAllocAsync), PPT(cuMemAllocFromPoolAsync), PPT(cuMemFreeAsync), P(cuMemCreate),
    P(cuMemRelease), PPT(cuLaunchKernel), PPT(cuLaunchKernelEx), PPT(cuLaunchCooperativeKernel),
    P(cuGraphCreate), P(cuGraphAddEmptyNode), P(cuGraphGetNodes), P(cuGraphExecDestroy),
    {"cuGraphInstantiate", (void *)cuGraphInstantiate_v2, (void *)cuGraphInstantiateWithFlags,
     NULL, 12000},
    P(cuGraphInstantiateWithFlags), PPT(cuGraphInstantiateWithParams), PPT(cuGraphLaunch),
    PV2(cuGetProcAddress, 12000),
};

/* What cuGetProcAddress answers, without any interposer in between (for the probe). */
void *standin_proc_address(const char *symbol, int version, cuuint64_t flags)
{
    for (size_t i = 0; symbol && i < sizeof g_procs / sizeof g_procs[0]; i++) {
        const struct proc *p = &g_procs[i];
        if (strcmp(symbol, p->name))
            continue;
        if ((flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) && p->ptsz)
            return p->ptsz;
        if (p->v2 && version >= p->v2_from)
            return p->v2;
        return p->legacy;
    }
    return NULL;
}

unsigned long long standin_launches(void) { return __atomic_load_n(&g_launches, __ATOMIC_RELAXED); }

CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                             CUdriverProcAddressQueryResult *status)
{
    if (!pfn)
        return CUDA_ERROR_INVALID_VALUE;
    *pfn = standin_proc_address(symbol, version, flags);
    if (status)
        *status = *pfn ? CU_GET_PROC_ADDRESS_SUCCESS : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    return *pfn ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags)
{
    return cuGetProcAddress_v2(symbol, pfn, version, flags, NULL);
}
