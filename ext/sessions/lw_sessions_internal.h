/*
 * The session table's parts, shared by its files:
 *   lw_sessions.c        the table: records, time, open/progress/state/remove, checks
 *   lw_sessions_index.c  the hash index from an id to its record
 *   lw_sessions_stuck.c  the stuck sessions' bookkeeping (a dense array + a map)
 *   lw_sessions_live.c   the JSON the status thread serves
 */
#ifndef LW_SESSIONS_INTERNAL_H
#define LW_SESSIONS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "lw_sessions.h"

_Static_assert(sizeof(lw_sess) == 64, "a session record is one cache line");

/* The index: open addressing with linear probing over 32-bit entries, each
 * (tag << 26) | (record index + 1), 0 for empty. The tag (6 bits of the
 * mixed hash) turns away 63 of 64 wrong candidates without touching their
 * records, each a likely cache miss. Grown at 3/4 full; deletion shifts
 * the following entries back (no tombstones). */
typedef struct lw_sessions_index {
    uint32_t *slots;
    uint32_t bits; /* size = 1 << bits */
    uint32_t used;
} lw_sessions_index;

#define LW_INDEX_TAG_SHIFT 26
#define LW_INDEX_REC_MASK ((1u << LW_INDEX_TAG_SHIFT) - 1)

/* One stuck session's bookkeeping. */
typedef struct lw_sessions_stuck {
    uint32_t index;        /* its record */
    int64_t reports;       /* stuck reports in this episode */
    double stuck_since;
    double interval;       /* the gap before the next report */
    double next_report_at;
    char *text;            /* the status server's `"id":..,"key":..`, or NULL */
    size_t text_len;
} lw_sessions_stuck;

typedef struct lw_sessions_stuck_set {
    lw_sessions_stuck *items; /* dense */
    size_t len, cap;
    uint32_t *map;            /* record index + 1 -> position + 1, open addressing */
    uint32_t map_bits;
} lw_sessions_stuck_set;

struct lw_sessions {
    lw_sessions_config cfg;
    pthread_mutex_t mutex;
    _Atomic unsigned long owner;

    /* records: an lw_mem array of `cap` records, `used` of them ever
     * handed out; freed ones chained through links.next */
    lw_sess *recs;
    uint32_t cap, used, free_head;
    size_t len;
    int64_t counts[LW_SESS_STATES];
    int64_t queued;

    lw_sessions_index index;
    lw_sessions_stuck_set stuck;
    lw_slots slots;
    size_t filed;
    double wheel_time;  /* the latest time collected at, or the start */
    uint64_t examined;

    /* time: latest = the registry's latest time; shift = stall time counted
     * before the current stall clock; the current one's first and latest
     * readings (stall_ok = 0: none yet) */
    double latest;
    double shift;
    double stall_base, stall_last;
    int stall_ok;
    uint64_t stall_token;
    /* lw_sessions_set_time_source */
    int clock_native;
    int python_stall;
    lw_sessions_stall_fn stall_fn;
    const void *stall_ctx;

    /* collect's output */
    lw_sessions_event *events;
    size_t events_cap;
    struct lw_sessions_due { double wake; uint32_t index; } *due;
    size_t due_cap;
    size_t last_due; /* how many the last collect found due */
};

/* lw_sessions_index.c */
int lw_sessions_index_init(lw_sessions_index *ix);
void lw_sessions_index_free(lw_sessions_index *ix);
size_t lw_sessions_index_memory(const lw_sessions_index *ix);
/* Room for one more entry (grows at 3/4 full): 0 or ENOMEM. */
int lw_sessions_index_reserve(lw_sessions *t);
int lw_sessions_index_find(lw_sessions *t, void *id, uint32_t hash, lw_sessions_eq eq, void *ctx,
                           uint32_t *index);
/* Add a record known to be absent (room reserved). */
void lw_sessions_index_add(lw_sessions *t, uint32_t index);
void lw_sessions_index_delete(lw_sessions *t, uint32_t index);

/* lw_sessions_stuck.c */
void lw_sessions_stuck_init(lw_sessions_stuck_set *s);
void lw_sessions_stuck_free(lw_sessions_stuck_set *s);
size_t lw_sessions_stuck_memory(const lw_sessions_stuck_set *s);
/* Room for n more entries: 0 or ENOMEM. */
int lw_sessions_stuck_reserve(lw_sessions_stuck_set *s, size_t n);
/* The entry of a record, or NULL. */
lw_sessions_stuck *lw_sessions_stuck_of(const lw_sessions_stuck_set *s, uint32_t index);
/* A new entry for a record (room reserved), zeroed but for its index. */
lw_sessions_stuck *lw_sessions_stuck_add(lw_sessions_stuck_set *s, uint32_t index);
void lw_sessions_stuck_delete(lw_sessions_stuck_set *s, uint32_t index);

#endif
