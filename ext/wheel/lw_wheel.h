/*
 * lw_wheel: a hierarchical timer wheel of keyed deadlines (tokio's and
 * Linux's design), the native core of loopwatch.TimerWheel.
 *
 * Deadlines are float seconds on one monotonic clock. The wheel cuts time in
 * ticks of `resolution` seconds and files each entry under the tick of its
 * deadline in one of `levels` levels of 64 slots: level L slot i covers
 * 64**L ticks. A 64-bit occupancy bitmap per level finds the next non-empty
 * slot with one count-trailing-zeros, so the earliest pending slot is found
 * in O(levels) whatever the number of entries.
 *
 * Entries are nodes in one slab (an array grown by doubling) linked into
 * their slot by 32-bit indices, so a node is 32 bytes and the slab can move
 * on realloc. Callers name an entry by its handle, the node's index, which
 * stays valid until the entry is removed or expires.
 *
 * Each node keeps its exact deadline: expiry compares it, never the tick, so
 * lw_wheel_expire(now) returns every entry whose deadline <= now and no other,
 * sorted by (deadline, scheduling order). Moving a node that sits at level
 * >= 1 to a later deadline only rewrites the deadline (lazy rescheduling): the
 * node is refiled when its old slot comes due. Level-0 nodes are always filed
 * under their own tick.
 *
 * Not thread-safe: callers serialize access (the Python binding holds the
 * GIL). Portable C11, no Python.h.
 */
#ifndef LW_WHEEL_H
#define LW_WHEEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lw_wheel lw_wheel;

typedef enum lw_wheel_status {
    LW_WHEEL_OK = 0,
    LW_WHEEL_EINVAL = 1,  /* NaN or infinite deadline, or bad resolution/start */
    LW_WHEEL_ERANGE = 2,  /* deadline further ahead than the horizon */
    LW_WHEEL_ENOMEM = 3,  /* allocation failed, or 2**32 - 1 entries */
} lw_wheel_status;

/* One expired entry, as lw_wheel_expire() reports it. */
typedef struct lw_wheel_due {
    double deadline;
    uint64_t seq;
    uint32_t handle;
} lw_wheel_due;

#define LW_WHEEL_SLOT_BITS 6
#define LW_WHEEL_SLOTS 64
#define LW_WHEEL_MAX_LEVELS 10
/* Every wheel accepts deadlines at least this far ahead of its time. */
#define LW_WHEEL_MIN_HORIZON_SECONDS (2.0 * 365.25 * 86400.0)
#define LW_WHEEL_MIN_RESOLUTION 1e-6
#define LW_WHEEL_MAX_RESOLUTION 3600.0

/* A wheel whose time starts at `start` (seconds). resolution must be in
 * [LW_WHEEL_MIN_RESOLUTION, LW_WHEEL_MAX_RESOLUTION], start finite. */
lw_wheel_status lw_wheel_new(double resolution, double start, lw_wheel **out);
void lw_wheel_free(lw_wheel *w);
/* Remove every entry (handles become invalid); the time stays. */
void lw_wheel_clear(lw_wheel *w);

double lw_wheel_resolution(const lw_wheel *w);
int lw_wheel_levels(const lw_wheel *w);
/* How far ahead of the wheel's time a deadline may be, in seconds. */
double lw_wheel_horizon(const lw_wheel *w);
/* The wheel's time: the latest `now` given to lw_wheel_expire, or start. */
double lw_wheel_time(const lw_wheel *w);
size_t lw_wheel_len(const lw_wheel *w);
/* Bytes held by the wheel (slab, levels, expiry buffer). */
size_t lw_wheel_memory(const lw_wheel *w);
size_t lw_wheel_node_size(void);

/* Whether `deadline` would be accepted now (OK, EINVAL or ERANGE). */
lw_wheel_status lw_wheel_check(const lw_wheel *w, double deadline);
/* Add an entry; its handle goes to *handle. */
lw_wheel_status lw_wheel_insert(lw_wheel *w, double deadline, uint32_t *handle);
/* Give a live entry a new deadline (O(1); lazy when it only moves later). */
lw_wheel_status lw_wheel_move(lw_wheel *w, uint32_t handle, double deadline);
/* Remove a live entry (O(1)). */
void lw_wheel_remove(lw_wheel *w, uint32_t handle);
int lw_wheel_is_live(const lw_wheel *w, uint32_t handle);
double lw_wheel_deadline(const lw_wheel *w, uint32_t handle);

/* The earliest time at which an entry may be due, or 0 when empty (1 when
 * found, in *out). Exact when the earliest entry is filed at level 0 (within
 * 64 ticks of the wheel's time); otherwise the start of the coarser slot that
 * holds it, which is never later than its deadline and always later than the
 * wheel's time, so expire(*out) refiles it and the next call is sharper. */
int lw_wheel_next_deadline(const lw_wheel *w, double *out);

/* Remove every entry whose deadline <= now and report them in *due (sorted by
 * deadline, ties in scheduling order; the array belongs to the wheel and is
 * valid until the next call). Advances the wheel's time to `now` when later.
 * now = +inf expires everything; NaN is EINVAL. Their handles are free for
 * reuse on the next insert. */
lw_wheel_status lw_wheel_expire(lw_wheel *w, double now, const lw_wheel_due **due,
                                size_t *count);

#ifdef __cplusplus
}
#endif

#endif /* LW_WHEEL_H */
