/* gs_map.c - the process's own tables: which allocation has which size on which device, and
 * how many nodes an instantiated graph has. Frees and releases give only the pointer or the
 * handle, so the size to give back is looked up here. Open addressing with linear probing
 * and backward-shift deletion (no tombstones), one mutex for all tables: allocations are
 * rare next to launches, and frameworks cache them.
 */
#define _GNU_SOURCE
#include "gpushare.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    uint64_t key;
    uint64_t size;
    int32_t dev;
    int32_t used;
};

struct table {
    struct entry *e;
    size_t cap; /* a power of two, or 0 before the first insert */
    size_t n;
};

static struct table g_tables[GS_NMAPS];
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t home(uint64_t key, size_t cap)
{
    /* Pointers are aligned and handles small: mix the bits before masking. */
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

static void place(struct entry *e, size_t cap, const struct entry *item)
{
    size_t i = home(item->key, cap);
    while (e[i].used && e[i].key != item->key)
        i = (i + 1) & (cap - 1);
    e[i] = *item;
}

static int grow(struct table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 64;
    struct entry *e = calloc(cap, sizeof *e);
    if (!e)
        return 0;
    for (size_t i = 0; i < t->cap; i++)
        if (t->e[i].used)
            place(e, cap, &t->e[i]);
    free(t->e);
    t->e = e;
    t->cap = cap;
    return 1;
}

static long find(const struct table *t, uint64_t key)
{
    if (!t->cap)
        return -1;
    for (size_t i = home(key, t->cap);; i = (i + 1) & (t->cap - 1)) {
        if (!t->e[i].used)
            return -1;
        if (t->e[i].key == key)
            return (long)i;
    }
}

int gs_track(enum gs_map_id map, uint64_t key, uint64_t size, int dev)
{
    struct table *t = &g_tables[map];
    struct entry item = {key, size, dev, 1};
    int ok = 1;
    pthread_mutex_lock(&g_lock);
    if ((t->n + 1) * 2 > t->cap)
        ok = grow(t);
    if (ok) {
        if (find(t, key) < 0)
            t->n++;
        place(t->e, t->cap, &item);
    }
    pthread_mutex_unlock(&g_lock);
    return ok;
}

int gs_untrack(enum gs_map_id map, uint64_t key, uint64_t *size, int *dev)
{
    struct table *t = &g_tables[map];
    pthread_mutex_lock(&g_lock);
    long found = find(t, key);
    if (found >= 0) {
        size_t mask = t->cap - 1, hole = (size_t)found;
        *size = t->e[hole].size;
        *dev = t->e[hole].dev;
        /* Pull later entries of the probe run back into the hole when the hole lies on
         * their way from their home slot, so that every lookup still finds them. */
        for (size_t j = (hole + 1) & mask; t->e[j].used; j = (j + 1) & mask) {
            size_t k = home(t->e[j].key, t->cap);
            if (((hole - k) & mask) < ((j - k) & mask)) {
                t->e[hole] = t->e[j];
                hole = j;
            }
        }
        t->e[hole].used = 0;
        t->n--;
    }
    pthread_mutex_unlock(&g_lock);
    return found >= 0;
}

uint64_t gs_lookup(enum gs_map_id map, uint64_t key, uint64_t missing)
{
    pthread_mutex_lock(&g_lock);
    long found = find(&g_tables[map], key);
    uint64_t size = found >= 0 ? g_tables[map].e[found].size : missing;
    pthread_mutex_unlock(&g_lock);
    return size;
}

/* fork(): a child inherits neither the parent's device memory nor its CUDA context, so it
 * starts with empty tables, and with an unlocked mutex whatever another thread was doing. */
void gs_maps_atfork_prepare(void) { pthread_mutex_lock(&g_lock); }

void gs_maps_atfork_parent(void) { pthread_mutex_unlock(&g_lock); }

void gs_maps_atfork_child(void)
{
    pthread_mutex_init(&g_lock, NULL);
    for (int m = 0; m < GS_NMAPS; m++) {
        free(g_tables[m].e);
        memset(&g_tables[m], 0, sizeof g_tables[m]);
    }
}
