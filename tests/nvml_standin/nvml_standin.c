/* nvml_standin.c - a stand-in libnvidia-ml.so.1 for the NVML sampler's tests.
 *
 * Its GPUs and their processes are read from the text file named by GPUPOOL_NVML_STANDIN_STATE
 * at every call, so a test changes utilisation and per-process figures while a server runs:
 *
 *     gpu 0 name NVIDIA H200 total_mib 143771 used_mib 2048 util 37
 *     gpu 1 name NVIDIA H200 total_mib 143771 used_mib 0 util 0 procutil off
 *     proc 4242 gpu 0 used_mib 1234 sm 55
 *     proc 4243 gpu 0 used_mib na sm 0
 *
 * "gpu" lines must come in index order from 0. "procutil off": the card answers
 * nvmlDeviceGetProcessUtilization with NVML_ERROR_NOT_SUPPORTED; "used_mib na": NVML's "not
 * available" (ULLONG_MAX), as under WDDM or vGPU. Without the variable, or with a file that
 * cannot be read, nvmlInit fails with NVML_ERROR_DRIVER_NOT_LOADED.
 *
 * The structs are laid out as pynvml (nvidia-ml-py) declares them with ctypes:
 * c_nvmlMemory_t, c_nvmlMemory_v2_t, c_nvmlUtilization_t, c_nvmlProcessInfo_v2_t (which
 * pynvml also uses for _v3) and c_nvmlProcessUtilizationSample_t; standin_struct_sizes()
 * lets a test compare them with ctypes.sizeof. MIG is reported as not supported. Nothing
 * here changes any state: it is read-only, like the sampler that uses it.
 */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_UNKNOWN = 999,
};

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;
typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

#define MAX_GPUS 16
#define MAX_PROCS 256
#define NAME_LEN 96
#define NOT_AVAILABLE 0xFFFFFFFFFFFFFFFFULL
#define MIB (1ULL << 20)

struct gpu {
    char name[NAME_LEN];
    unsigned long long total_mib, used_mib;
    unsigned int util, mem_util;
    int procutil; /* 0: nvmlDeviceGetProcessUtilization not supported */
};

struct proc {
    unsigned int pid, gpu, sm, mem;
    unsigned long long used; /* bytes, or NOT_AVAILABLE */
};

struct state {
    unsigned int gpus, procs;
    struct gpu gpu[MAX_GPUS];
    struct proc proc[MAX_PROCS];
};

static int initialised;

static int is_key(const char *word)
{
    static const char *keys[] = {"total_mib", "used_mib", "util", "mem_util", "procutil",
                                 NULL};
    for (int i = 0; keys[i]; i++)
        if (!strcmp(word, keys[i]))
            return 1;
    return 0;
}

static void parse_gpu(struct state *st, char *rest)
{
    char *words[64];
    unsigned n = 0;
    char *save = NULL;
    for (char *w = strtok_r(rest, " \t\n", &save); w && n < 64; w = strtok_r(NULL, " \t\n", &save))
        words[n++] = w;
    if (!n || (unsigned)atoi(words[0]) != st->gpus || st->gpus >= MAX_GPUS)
        return; /* gpu lines come in index order */
    struct gpu *g = &st->gpu[st->gpus++];
    memset(g, 0, sizeof *g);
    g->procutil = 1;
    snprintf(g->name, sizeof g->name, "NVIDIA Stand-in");
    for (unsigned k = 1; k < n; k++) {
        if (!strcmp(words[k], "name")) { /* the name runs to the next key */
            g->name[0] = 0;
            while (k + 1 < n && !is_key(words[k + 1])) {
                if (g->name[0])
                    strncat(g->name, " ", sizeof g->name - strlen(g->name) - 1);
                strncat(g->name, words[++k], sizeof g->name - strlen(g->name) - 1);
            }
            continue;
        }
        if (k + 1 >= n)
            break;
        const char *key = words[k], *value = words[++k];
        if (!strcmp(key, "total_mib"))
            g->total_mib = strtoull(value, NULL, 10);
        else if (!strcmp(key, "used_mib"))
            g->used_mib = strtoull(value, NULL, 10);
        else if (!strcmp(key, "util"))
            g->util = (unsigned)atoi(value);
        else if (!strcmp(key, "mem_util"))
            g->mem_util = (unsigned)atoi(value);
        else if (!strcmp(key, "procutil"))
            g->procutil = strcmp(value, "off") != 0;
    }
}

static void parse_proc(struct state *st, char *rest)
{
    if (st->procs >= MAX_PROCS)
        return;
    char *save = NULL;
    char *word = strtok_r(rest, " \t\n", &save);
    if (!word)
        return;
    struct proc *p = &st->proc[st->procs];
    memset(p, 0, sizeof *p);
    p->pid = (unsigned)strtoul(word, NULL, 10);
    while ((word = strtok_r(NULL, " \t\n", &save))) {
        char *value = strtok_r(NULL, " \t\n", &save);
        if (!value)
            break;
        if (!strcmp(word, "gpu"))
            p->gpu = (unsigned)atoi(value);
        else if (!strcmp(word, "used_mib"))
            p->used = strcmp(value, "na") ? strtoull(value, NULL, 10) * MIB : NOT_AVAILABLE;
        else if (!strcmp(word, "sm"))
            p->sm = (unsigned)atoi(value);
        else if (!strcmp(word, "mem"))
            p->mem = (unsigned)atoi(value);
    }
    if (p->pid)
        st->procs++;
}

/* The state now; 0 on success. */
static int load(struct state *st)
{
    const char *path = getenv("GPUPOOL_NVML_STANDIN_STATE");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return -1;
    memset(st, 0, sizeof *st);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "gpu ", 4))
            parse_gpu(st, line + 4);
        else if (!strncmp(line, "proc ", 5))
            parse_proc(st, line + 5);
    }
    fclose(f);
    return 0;
}

/* The card of a handle (index + 1), loading the state; an NVML error otherwise. */
static nvmlReturn_t card(nvmlDevice_t device, struct state *st, unsigned *index)
{
    if (!initialised)
        return NVML_ERROR_UNINITIALIZED;
    if (load(st))
        return NVML_ERROR_UNKNOWN;
    uintptr_t handle = (uintptr_t)device;
    if (handle < 1 || handle > st->gpus)
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = (unsigned)(handle - 1);
    return NVML_SUCCESS;
}

static unsigned long long now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (unsigned long long)tv.tv_sec * 1000000ULL + (unsigned long long)tv.tv_usec;
}

/* -- the library ------------------------------------------------------------------------ */

nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    (void)flags;
    struct state st;
    if (load(&st))
        return NVML_ERROR_DRIVER_NOT_LOADED;
    initialised = 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void)
{
    if (!initialised)
        return NVML_ERROR_UNINITIALIZED;
    initialised = 0;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    if (!version || length < 8)
        return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(version, length, "0.0.standin");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    struct state st;
    if (!initialised)
        return NVML_ERROR_UNINITIALIZED;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (load(&st))
        return NVML_ERROR_UNKNOWN;
    *count = st.gpus;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    unsigned count;
    nvmlReturn_t ret = nvmlDeviceGetCount_v2(&count);
    if (ret != NVML_SUCCESS)
        return ret;
    if (index >= count || !device)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = (nvmlDevice_t)(uintptr_t)(index + 1);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    struct state st;
    if (!index)
        return NVML_ERROR_INVALID_ARGUMENT;
    return card(device, &st, index);
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    struct state st;
    unsigned i;
    nvmlReturn_t ret = card(device, &st, &i);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!name || length <= strlen(st.gpu[i].name))
        return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(name, length, "%s", st.gpu[i].name);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    struct state st;
    unsigned i;
    nvmlReturn_t ret = card(device, &st, &i);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!uuid || length < 41)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(uuid, length, "GPU-5a4d0000-0000-4000-8000-%012u", i);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    struct state st;
    unsigned i;
    nvmlReturn_t ret = card(device, &st, &i);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    memory->total = st.gpu[i].total_mib * MIB;
    memory->used = st.gpu[i].used_mib * MIB;
    memory->free = memory->total > memory->used ? memory->total - memory->used : 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    nvmlMemory_t v1;
    nvmlReturn_t ret = nvmlDeviceGetMemoryInfo(device, &v1);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    memory->total = v1.total;
    memory->reserved = 0;
    memory->free = v1.free;
    memory->used = v1.used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization)
{
    struct state st;
    unsigned i;
    nvmlReturn_t ret = card(device, &st, &i);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!utilization)
        return NVML_ERROR_INVALID_ARGUMENT;
    utilization->gpu = st.gpu[i].util;
    utilization->memory = st.gpu[i].mem_util;
    return NVML_SUCCESS;
}

/* NVML's contract: too small a buffer (or none) gets the count and INSUFFICIENT_SIZE; no
 * process at all is SUCCESS with a count of 0. */
static nvmlReturn_t running(nvmlDevice_t device, unsigned int *count, nvmlProcessInfo_t *infos)
{
    struct state st;
    unsigned i;
    nvmlReturn_t ret = card(device, &st, &i);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned n = 0;
    for (unsigned p = 0; p < st.procs; p++)
        n += st.proc[p].gpu == i;
    if (!infos || *count < n) {
        *count = n;
        return n ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    }
    unsigned k = 0;
    for (unsigned p = 0; p < st.procs; p++) {
        if (st.proc[p].gpu != i)
            continue;
        infos[k].pid = st.proc[p].pid;
        infos[k].usedGpuMemory = st.proc[p].used;
        infos[k].gpuInstanceId = 0xFFFFFFFFu;
        infos[k].computeInstanceId = 0xFFFFFFFFu;
        k++;
    }
    *count = k;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *count,
                                                     nvmlProcessInfo_t *infos)
{
    return running(device, count, infos);
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *count,
                                                     nvmlProcessInfo_t *infos)
{
    return running(device, count, infos);
}

/* One sample per process of the card, stamped now: NOT_FOUND when there is none (as NVML
 * answers when no process ran since lastSeenTimeStamp). */
nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device,
                                             nvmlProcessUtilizationSample_t *utilization,
                                             unsigned int *count,
                                             unsigned long long lastSeenTimeStamp)
{
    (void)lastSeenTimeStamp;
    struct state st;
    unsigned i;
    nvmlReturn_t ret = card(device, &st, &i);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!st.gpu[i].procutil)
        return NVML_ERROR_NOT_SUPPORTED;
    unsigned n = 0;
    for (unsigned p = 0; p < st.procs; p++)
        n += st.proc[p].gpu == i;
    if (!n)
        return NVML_ERROR_NOT_FOUND;
    if (!utilization || *count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsigned long long stamp = now_us();
    unsigned k = 0;
    for (unsigned p = 0; p < st.procs; p++) {
        if (st.proc[p].gpu != i)
            continue;
        utilization[k].pid = st.proc[p].pid;
        utilization[k].timeStamp = stamp;
        utilization[k].smUtil = st.proc[p].sm;
        utilization[k].memUtil = st.proc[p].mem;
        utilization[k].encUtil = 0;
        utilization[k].decUtil = 0;
        k++;
    }
    *count = k;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current,
                                  unsigned int *pending)
{
    struct state st;
    unsigned i;
    (void)current;
    (void)pending;
    nvmlReturn_t ret = card(device, &st, &i);
    return ret != NVML_SUCCESS ? ret : NVML_ERROR_NOT_SUPPORTED;
}

/* For the tests: the sizes of the structs above, to compare with pynvml's ctypes ones. */
void standin_struct_sizes(unsigned int *memory, unsigned int *memory_v2, unsigned int *util,
                          unsigned int *process, unsigned int *sample)
{
    *memory = sizeof(nvmlMemory_t);
    *memory_v2 = sizeof(nvmlMemory_v2_t);
    *util = sizeof(nvmlUtilization_t);
    *process = sizeof(nvmlProcessInfo_t);
    *sample = sizeof(nvmlProcessUtilizationSample_t);
}
