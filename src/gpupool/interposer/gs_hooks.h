/* gs_hooks.h - the driver entry points gpushare exports, and finding the real ones.
 *
 * gpushare.c defines the hooks (gs_<name>, exported as <name>); gs_resolve.c finds the real
 * functions behind them and answers dlsym and cuGetProcAddress with the hooks.
 */
#ifndef GPUPOOL_GS_HOOKS_H
#define GPUPOOL_GS_HOOKS_H

#include "cuda_abi.h"

/* Every exported hook; the libraries the real functions live in. */
enum { LIB_CUDA, LIB_NVML };
#define GS_HOOKS(X)                                                                             \
    X(cuMemAlloc, LIB_CUDA) X(cuMemAlloc_v2, LIB_CUDA) X(cuMemAllocPitch, LIB_CUDA)             \
    X(cuMemAllocPitch_v2, LIB_CUDA) X(cuMemAllocManaged, LIB_CUDA)                             \
    X(cuMemAllocAsync, LIB_CUDA) X(cuMemAllocAsync_ptsz, LIB_CUDA)                             \
    X(cuMemAllocFromPoolAsync, LIB_CUDA) X(cuMemAllocFromPoolAsync_ptsz, LIB_CUDA)             \
    X(cuMemCreate, LIB_CUDA) X(cuMemFree, LIB_CUDA) X(cuMemFree_v2, LIB_CUDA)                  \
    X(cuMemFreeAsync, LIB_CUDA) X(cuMemFreeAsync_ptsz, LIB_CUDA) X(cuMemRelease, LIB_CUDA)     \
    X(cuMemGetInfo, LIB_CUDA) X(cuMemGetInfo_v2, LIB_CUDA) X(cuDeviceTotalMem, LIB_CUDA)       \
    X(cuDeviceTotalMem_v2, LIB_CUDA) X(cuLaunchKernel, LIB_CUDA)                               \
    X(cuLaunchKernel_ptsz, LIB_CUDA) X(cuLaunchKernelEx, LIB_CUDA)                             \
    X(cuLaunchKernelEx_ptsz, LIB_CUDA) X(cuLaunchCooperativeKernel, LIB_CUDA)                  \
    X(cuLaunchCooperativeKernel_ptsz, LIB_CUDA) X(cuGraphLaunch, LIB_CUDA)                     \
    X(cuGraphLaunch_ptsz, LIB_CUDA) X(cuGraphInstantiate_v2, LIB_CUDA)                         \
    X(cuGraphInstantiateWithFlags, LIB_CUDA) X(cuGraphInstantiateWithParams, LIB_CUDA)         \
    X(cuGraphInstantiateWithParams_ptsz, LIB_CUDA) X(cuGraphExecDestroy, LIB_CUDA)             \
    X(cuGetProcAddress, LIB_CUDA) X(cuGetProcAddress_v2, LIB_CUDA)                             \
    X(nvmlDeviceGetMemoryInfo, LIB_NVML) X(nvmlDeviceGetMemoryInfo_v2, LIB_NVML)

enum gs_hook {
#define X(name, lib) H_##name,
    GS_HOOKS(X)
#undef X
    H_COUNT
};

/* Real functions gpushare calls without hooking them. */
enum gs_helper { R_CTX_GET_DEVICE, R_GRAPH_GET_NODES, R_NVML_GET_INDEX, R_COUNT };

extern void *const gs_wrappers[H_COUNT]; /* our function for each hook (gpushare.c) */

void *gs_real(enum gs_hook h);           /* the real function, or NULL if there is none */
void *gs_helper(enum gs_helper r);
/* cuGetProcAddress answered fn for symbol: the function to hand to the caller instead. */
void *gs_swap_answer(const char *symbol, void *fn, int version, cuuint64_t flags);

#endif
