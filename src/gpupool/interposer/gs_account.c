/* gs_account.c - what the job may use, and what it uses: configuration, the share file,
 * the per-process records of the memory ledger, and launch pacing.
 *
 * Memory: every process of the job owns one record in the share file and adds to it what it
 * allocates. An allocation is admitted under the file's lock iff the sum of all records plus
 * the request stays within the limit. A process that dies keeps its record until someone
 * needs the room: before refusing an allocation, and before reporting free memory, records
 * of processes that no longer run (or are zombies, or are a recycled pid) are dropped. That
 * is how a SIGKILLed process's usage is released without any help from it.
 *
 * Compute: launches are paced like a generic cell-rate algorithm. Each launch is charged a
 * nominal GPU time (GPUPOOL_LAUNCH_COST_US), so at share s a launch reserves cost/s of wall
 * time on the device's clock in the share file, which all processes of the job advance. A
 * launch waits while the clock is more than the burst ahead of now. The interposer cannot see
 * how long a kernel really runs; this is an approximation that holds the launch *rate*.
 */
#define _GNU_SOURCE
#include "gpushare.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h> /* isfinite: a compiler builtin, no libm */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(pthread_mutex_t) <= 64, "the share file reserves 64 bytes for the lock");
_Static_assert(offsetof(struct gs_header, limit_bytes) == 24, "layout v1");
_Static_assert(offsetof(struct gs_header, lock) == 64, "layout v1");
_Static_assert(sizeof(struct gs_header) == 256, "layout v1");
_Static_assert(sizeof(struct gs_record) == 144, "layout v1");

struct gs_config gs_cfg;
int gs_cfg_ready;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static struct gs_share *g_sh;       /* the mapped share file, or g_private */
static struct gs_share g_private;   /* without a share file: this process alone */
static struct gs_record *g_rec;     /* this process's record; NULL until its first allocation */
static const char *g_path = "(this process only)";

void gs_warn(const char *fmt, ...)
{
    char line[512];
    int n = snprintf(line, sizeof line, "gpushare[%d]: ", (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    line[len++] = '\n';
    /* write(2), not stdio: callable from any thread, whatever state stderr's buffer is in */
    if (write(STDERR_FILENO, line, len) < 0)
        return;
}

/* ---- configuration ----------------------------------------------------------------- */

static int env_number(const char *name, double *out)
{
    const char *s = getenv(name);
    char *end;
    if (!s || !*s)
        return 0;
    errno = 0;
    double v = strtod(s, &end);
    while (*end == ' ')
        end++;
    if (errno || *end || !isfinite(v) || v < 0) {
        gs_warn("ignoring %s=%s: not a non-negative number", name, s);
        return 0;
    }
    *out = v;
    return 1;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void init_lock(struct gs_share *sh)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&sh->h.lock.mutex, &attr);
    pthread_mutexattr_destroy(&attr);
}

static void init_header(struct gs_share *sh)
{
    memcpy(sh->h.magic, GS_MAGIC, sizeof sh->h.magic);
    sh->h.version = GS_VERSION;
    sh->h.max_devs = GS_MAX_DEVS;
    sh->h.max_procs = GS_MAX_PROCS;
}

/* Map the share file. The node side creates it; a zero-filled or short file is completed
 * here. The first process to map it initialises the lock, under flock so that two
 * processes starting together cannot both do it. Returns NULL (after a warning) if the file
 * cannot be used: the process then counts on its own, and says so. */
static struct gs_share *attach(const char *path)
{
    struct gs_share *sh = NULL;
    struct stat st;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        gs_warn("cannot open the share file %s (%s): this process's GPU memory is limited on "
                "its own, not together with the job's other processes",
                path, strerror(errno));
        return NULL;
    }
    if (flock(fd, LOCK_EX) < 0 || fstat(fd, &st) < 0)
        goto fail;
    if ((size_t)st.st_size < sizeof *sh && ftruncate(fd, sizeof *sh) < 0)
        goto fail;
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (sh == MAP_FAILED) {
        sh = NULL;
        goto fail;
    }
    if (sh->h.magic[0] == 0)
        init_header(sh);
    if (memcmp(sh->h.magic, GS_MAGIC, sizeof sh->h.magic) || sh->h.version != GS_VERSION ||
        sh->h.max_devs != GS_MAX_DEVS || sh->h.max_procs != GS_MAX_PROCS) {
        gs_warn("the share file %s is not a gpushare v%u file: this process's GPU memory is "
                "limited on its own", path, GS_VERSION);
        munmap(sh, sizeof *sh);
        close(fd);
        return NULL;
    }
    if (!__atomic_load_n(&sh->h.mutex_ready, __ATOMIC_ACQUIRE)) {
        init_lock(sh);
        __atomic_store_n(&sh->h.mutex_ready, 1, __ATOMIC_RELEASE);
    }
    flock(fd, LOCK_UN);
    close(fd); /* the mapping keeps the file */
    return sh;
fail:
    gs_warn("cannot use the share file %s (%s): this process's GPU memory is limited on its "
            "own", path, strerror(errno));
    close(fd);
    return NULL;
}

/* The limit the node side wrote to GPUPOOL_SHARE_LIMIT_FILE (bytes, as decimal text), in a
 * file the job can read but not change; 0 when there is none or it cannot be read. */
static uint64_t limit_file_bytes(const char *path)
{
    char buf[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        gs_warn("cannot read the limit file %s (%s)", path, strerror(errno));
        return 0;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return strtoull(buf, NULL, 10);
}

static void atfork_child(void)
{
    g_rec = NULL; /* the child is a new process: it gets its own record when it allocates */
    gs_maps_atfork_child();
}

static void load_config(void)
{
    double mib = 0, fraction = 0, percent = 0, cost_us = 50, burst_us = 10000;
    const char *path = getenv("GPUPOOL_SHARE_FILE");

    env_number("GPUPOOL_GPU_MEMORY_LIMIT_MIB", &mib);
    gs_cfg.limit = mib >= (double)(UINT64_MAX >> 21) ? UINT64_MAX >> 1 : (uint64_t)mib << 20;
    gs_cfg.share = 1;
    if (env_number("GPUPOOL_GPU_FRACTION", &fraction) && fraction > 0)
        gs_cfg.share = fraction < 1 ? fraction : 1;
    else if (env_number("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", &percent) && percent > 0)
        gs_cfg.share = percent < 100 ? percent / 100 : 1;
    env_number("GPUPOOL_LAUNCH_COST_US", &cost_us);
    env_number("GPUPOOL_LAUNCH_BURST_US", &burst_us);
    if (gs_cfg.share < 1 && cost_us > 0)
        gs_cfg.interval_ns = (uint64_t)(cost_us * 1000 / gs_cfg.share + 0.5);
    gs_cfg.burst_ns = (uint64_t)(burst_us * 1000);

    g_sh = path && *path ? attach(path) : NULL;
    if (g_sh) {
        g_path = path;
        /* The node side's word bounds the job's: a process can narrow its limit, not widen. */
        uint64_t file_limit = g_sh->h.limit_bytes;
        if (file_limit && (!gs_cfg.limit || file_limit < gs_cfg.limit))
            gs_cfg.limit = file_limit;
    } else {
        g_sh = &g_private;
        init_header(g_sh);
        init_lock(g_sh);
    }
    const char *limit_path = getenv("GPUPOOL_SHARE_LIMIT_FILE");
    if (limit_path && *limit_path) {
        /* The share file is the job's to write (its ledger); this file is not. */
        uint64_t file_limit = limit_file_bytes(limit_path);
        if (file_limit && (!gs_cfg.limit || file_limit < gs_cfg.limit))
            gs_cfg.limit = file_limit;
    }
    pthread_atfork(gs_maps_atfork_prepare, gs_maps_atfork_parent, atfork_child);
}

const struct gs_config *gs_config_load(void)
{
    pthread_once(&g_once, load_config);
    __atomic_store_n(&gs_cfg_ready, 1, __ATOMIC_RELEASE);
    return &gs_cfg;
}

/* ---- the ledger -------------------------------------------------------------------- */

static int slot_of(int dev)
{
    static int warned;
    if (dev >= 0 && dev < GS_MAX_DEVS)
        return dev;
    if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
        gs_warn("device %d is beyond the %d the share file tracks: counted with device %d",
                dev, GS_MAX_DEVS, GS_MAX_DEVS - 1);
    return dev < 0 ? 0 : GS_MAX_DEVS - 1;
}

/* State and start time of a process from /proc/PID/stat; 0 if it cannot be read. */
static int read_stat(int pid, char *state, uint64_t *start_time)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p || p[1] != ' ')
        return 0;
    *state = p[2];
    p += 3;
    for (int field = 4; field < 22 && p; field++) /* fields 4..21 lie between */
        p = strchr(p + 1, ' ');
    if (!p)
        return 0;
    *start_time = strtoull(p + 1, NULL, 10);
    return 1;
}

static int alive(const struct gs_record *r)
{
    char state;
    uint64_t start;
    int pid = __atomic_load_n(&r->pid, __ATOMIC_ACQUIRE);
    if (!pid)
        return 0;
    if (r == g_rec)
        return 1;
    if (read_stat(pid, &state, &start))
        return state != 'Z' && state != 'X' && start == r->start_time;
    /* no /proc (or hidden): the pid's existence is all there is to go by */
    return !(kill(pid, 0) < 0 && errno == ESRCH);
}

static void drop(struct gs_record *r)
{
    for (int d = 0; d < GS_MAX_DEVS; d++)
        __atomic_store_n(&r->bytes[d], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&r->pid, 0, __ATOMIC_RELEASE);
}

/* Drop the records of processes that are gone. Caller holds the lock. */
static void collect(void)
{
    for (int i = 0; i < GS_MAX_PROCS; i++) {
        struct gs_record *r = &g_sh->rec[i];
        if (r->pid && !alive(r))
            drop(r);
    }
}

static uint64_t sum(int slot)
{
    uint64_t total = 0;
    for (int i = 0; i < GS_MAX_PROCS; i++)
        if (__atomic_load_n(&g_sh->rec[i].pid, __ATOMIC_ACQUIRE))
            total += __atomic_load_n(&g_sh->rec[i].bytes[slot], __ATOMIC_RELAXED);
    return total;
}

static int lock(void)
{
    int err = pthread_mutex_lock(&g_sh->h.lock.mutex);
    if (err == EOWNERDEAD) {
        /* The holder died inside its critical section. Counters are single words, and its
         * own record is dropped by the next collect(), so the ledger is consistent. */
        pthread_mutex_consistent(&g_sh->h.lock.mutex);
        err = 0;
    }
    if (err)
        gs_warn("cannot lock the share file %s (%s): allocation refused", g_path,
                strerror(err));
    return err == 0;
}

static void unlock(void) { pthread_mutex_unlock(&g_sh->h.lock.mutex); }

/* Claim a record for this process. Caller holds the lock. */
static int claim(void)
{
    static int warned;
    char state;
    uint64_t start = 0;
    if (g_rec)
        return 1;
    read_stat((int)getpid(), &state, &start);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < GS_MAX_PROCS; i++) {
            struct gs_record *r = &g_sh->rec[i];
            if (r->pid)
                continue;
            memset(r->bytes, 0, sizeof r->bytes);
            r->start_time = start;
            __atomic_store_n(&r->pid, (int32_t)getpid(), __ATOMIC_RELEASE);
            g_rec = r;
            return 1;
        }
        collect();
    }
    if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
        gs_warn("the share file %s has no free record (%d processes of the job allocate): "
                "this process's allocations are refused", g_path, GS_MAX_PROCS);
    return 0;
}

static int fits(uint64_t used, uint64_t bytes)
{
    return bytes <= gs_cfg.limit && used <= gs_cfg.limit - bytes;
}

int gs_reserve(int dev, uint64_t bytes)
{
    int slot = slot_of(dev), ok;
    if (!lock())
        return 0;
    ok = claim();
    if (ok && !fits(sum(slot), bytes)) {
        collect(); /* only now: the dead matter when they stand in the way */
        ok = fits(sum(slot), bytes);
    }
    if (ok)
        __atomic_add_fetch(&g_rec->bytes[slot], bytes, __ATOMIC_RELAXED);
    unlock();
    return ok;
}

void gs_unreserve(int dev, uint64_t bytes)
{
    /* Lock-free: lowering a count cannot let anyone pass the limit. */
    struct gs_record *r = g_rec;
    int slot = slot_of(dev);
    if (!r || !bytes)
        return;
    uint64_t have = __atomic_load_n(&r->bytes[slot], __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(&r->bytes[slot], &have, have > bytes ? have - bytes : 0,
                                        1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

uint64_t gs_used(int dev)
{
    int slot = slot_of(dev);
    if (!lock())
        return sum(slot);
    collect();
    uint64_t used = sum(slot);
    unlock();
    return used;
}

/* At exit the driver frees the process's memory: give the record back at once. */
__attribute__((destructor)) static void release_record(void)
{
    struct gs_record *r = g_rec;
    if (r && r->pid == (int32_t)getpid()) {
        g_rec = NULL;
        drop(r);
    }
}

/* ---- launch pacing ----------------------------------------------------------------- */

void gs_pace(int dev, uint64_t launches)
{
    uint64_t *clock = &g_sh->h.tat_ns[slot_of(dev)];
    uint64_t cost = gs_cfg.interval_ns * (launches ? launches : 1);
    uint64_t now = mono_ns();
    uint64_t due = __atomic_load_n(clock, __ATOMIC_RELAXED);
    /* Take the next slot: it starts when the clock says, or now if the clock fell behind
     * (an idle spell earns no credit beyond the burst). */
    while (!__atomic_compare_exchange_n(clock, &due, (due > now ? due : now) + cost, 1,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        ;
    if (due > now + gs_cfg.burst_ns) {
        uint64_t until = due - gs_cfg.burst_ns;
        struct timespec ts = {(time_t)(until / 1000000000u), (long)(until % 1000000000u)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
    }
}
