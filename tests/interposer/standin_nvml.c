/* standin_nvml.c - a stand-in for libnvidia-ml.so.1: eight 80 GiB GPUs, none of it in use. */
#include "cuda_abi.h"

#include <stdint.h>

#define GPUS 8u
#define TOTAL (80ULL << 30)

nvmlReturn_t nvmlInit_v2(void) { return NVML_SUCCESS; }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    if (index >= GPUS || !device)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = (nvmlDevice_t)(uintptr_t)(index + 1);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    uintptr_t handle = (uintptr_t)device;
    if (handle < 1 || handle > GPUS || !index)
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = (unsigned int)(handle - 1);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    unsigned int index;
    if (nvmlDeviceGetIndex(device, &index) != NVML_SUCCESS || !memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    memory->total = TOTAL;
    memory->free = TOTAL;
    memory->used = 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    unsigned int index;
    if (nvmlDeviceGetIndex(device, &index) != NVML_SUCCESS || !memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    memory->total = TOTAL;
    memory->reserved = 0;
    memory->free = TOTAL;
    memory->used = 0;
    return NVML_SUCCESS;
}
