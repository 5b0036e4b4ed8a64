/* gpushare.h - the interposer's internal interfaces and the layout of the share file.
 *
 * The share file is the job's memory ledger on one node: created by the node side before the
 * job starts (gpupool/interposer/sharefile.py writes it and mirrors this layout), mapped
 * MAP_SHARED by every process of the job, deleted by the node side when the job ends. It holds
 * one record per process that has allocated GPU memory, so the usage of a process that died
 * (SIGKILL included) can be told apart and dropped, and one launch-pacing clock per device.
 */
#ifndef GPUPOOL_GPUSHARE_H
#define GPUPOOL_GPUSHARE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define GS_MAGIC "GPUSHR1"  /* 8 bytes with its NUL */
#define GS_VERSION 1u
#define GS_MAX_DEVS 16      /* device ordinals as the job sees them (after CUDA_VISIBLE_DEVICES) */
#define GS_MAX_PROCS 256    /* processes of one job that allocate at the same time */

struct gs_record {
    int32_t pid;              /* 0: a free slot */
    uint32_t reserved;
    uint64_t start_time;      /* field 22 of /proc/PID/stat: tells a recycled pid apart */
    uint64_t bytes[GS_MAX_DEVS];
};

struct gs_header {
    char magic[8];
    uint32_t version;
    uint32_t mutex_ready;     /* set (under flock) by the first process that maps the file */
    uint32_t max_devs;
    uint32_t max_procs;
    uint64_t limit_bytes;     /* per device, written by the node side; 0 = none */
    uint8_t reserved[32];
    union {
        pthread_mutex_t mutex;  /* robust, process-shared: guards check-and-reserve */
        uint8_t pad[64];
    } lock;
    uint64_t tat_ns[GS_MAX_DEVS]; /* launch pacing: next free slot per device, CLOCK_MONOTONIC */
};

struct gs_share {
    struct gs_header h;
    struct gs_record rec[GS_MAX_PROCS];
};

/* What this process was told, read once from the environment (and the share file). */
struct gs_config {
    uint64_t limit;        /* bytes per device; 0 = no memory limit (pass-through) */
    double share;          /* compute share in (0, 1] */
    uint64_t interval_ns;  /* wall time one launch reserves (cost / share); 0 = no pacing */
    uint64_t burst_ns;     /* how far launches may run ahead of the pace after an idle spell */
};

/* The configuration, loaded on first use (one acquire load once it is). */
extern struct gs_config gs_cfg;
extern int gs_cfg_ready;
const struct gs_config *gs_config_load(void);
static inline const struct gs_config *gs_config(void)
{
    if (__builtin_expect(__atomic_load_n(&gs_cfg_ready, __ATOMIC_ACQUIRE), 1))
        return &gs_cfg;
    return gs_config_load();
}

/* Memory ledger (gs_account.c). dev is a device ordinal of the process. */
int gs_reserve(int dev, uint64_t bytes);     /* 1: reserved; 0: it would pass the limit */
void gs_unreserve(int dev, uint64_t bytes);
uint64_t gs_used(int dev);                   /* the job's live usage on dev */
void gs_pace(int dev, uint64_t launches);    /* blocks as long as the launches' pace demands */

/* In-process tables (gs_map.c): allocation -> (size, device), graph exec -> node count. */
enum gs_map_id { GS_PTRS, GS_HANDLES, GS_GRAPHS, GS_NMAPS };
int gs_track(enum gs_map_id map, uint64_t key, uint64_t size, int dev);  /* 0: no memory */
int gs_untrack(enum gs_map_id map, uint64_t key, uint64_t *size, int *dev);
uint64_t gs_lookup(enum gs_map_id map, uint64_t key, uint64_t missing);
void gs_maps_atfork_prepare(void);
void gs_maps_atfork_parent(void);
void gs_maps_atfork_child(void);

void gs_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
