/*
 * lw_sessions: the session table of the native SessionRegistry.
 *
 * One slab of 64-byte session records (lw_sess) with the timer wheel's links
 * inside each record, one hash index keyed by the caller's session id, the
 * stuck sessions' bookkeeping beside them, per-state counts, the registry's
 * time (the caller's clock minus the loop's stalls), and a mutex.
 *
 * The wheel files each record under its next "interesting" time, its wake:
 * when it would become stuck (its last activity + stuck_after), its next
 * stuck report or its eviction, or its idle timeout. The wake is derived
 * from the record each time it is needed, never stored: a heartbeat only
 * moves the record's activity later, and the record stays where it is
 * filed until that slot comes due, when it is refiled (lazily, as Linux's
 * and tokio's wheels move timers). So progress() is a hash lookup and a
 * store, and a check touches only the records whose slots come due: no
 * scan, ever. Whatever moves a wake earlier (a state change, a recovery, a
 * report) refiles the record at once, so no record is filed after its wake.
 *
 * Ids and keys are the caller's objects, opaque here (void *): the binding
 * owns the references, hashes the ids (outside the lock) and compares two
 * ids whose hashes match through an lw_sessions_eq callback (under it).
 * Nothing here calls back except that callback.
 *
 * Locking: every function but lw_sessions_new/free and the *_live readers
 * expects the caller to hold the table's mutex (lw_sessions_lock/trylock).
 * The live readers take it themselves: the status server's thread, which
 * never holds the GIL, reads counts and stuck sessions through them while
 * the event loop is blocked. Portable C11, no Python.h.
 */
#ifndef LW_SESSIONS_H
#define LW_SESSIONS_H

#include <stddef.h>
#include <stdint.h>

#include "lw_slots.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { LW_SESS_IDLE = 0, LW_SESS_QUEUED = 1, LW_SESS_PROCESSING = 2, LW_SESS_WAITING = 3 };
#define LW_SESS_STATES 4
#define LW_SESS_ACTIVE(state) ((state) >= LW_SESS_PROCESSING)

/* lw_sess.flags */
#define LW_SESS_STUCK 1u  /* reported stuck; its lw_sessions_stuck entry exists */
#define LW_SESS_ASKING 2u /* due, waiting for the store's answer: unfiled */
#define LW_SESS_TASK 4u   /* the binding holds a task bound to it */

/* The most sessions a table holds: record indices fit the index's 26 bits. */
#define LW_SESSIONS_MAX ((uint32_t)((1u << 26) - 2))
#define LW_SESSIONS_NIL UINT32_MAX

typedef struct lw_sess {
    void *id;              /* the caller's id (a reference the binding owns); NULL: free */
    void *key;             /* the caller's label, or NULL for None */
    double opened_at;      /* registry times */
    double state_since;
    double last_progress;
    lw_slot_links links;   /* wheel slot list; tag[0] = state, tag[1] = flags; free list: .next */
    uint32_t hash;         /* the id's hash, low 32 bits */
    uint32_t gen;          /* bumped when the record is freed: a handle is (gen, index) */
    int32_t queue_depth;   /* -1: None */
} lw_sess;

#define LW_SESS_STATE(r) ((r)->links.tag[0])
#define LW_SESS_FLAGS(r) ((r)->links.tag[1])

typedef struct lw_sessions_config {
    double stuck_after;          /* > 0 */
    double report_backoff;       /* >= 1 */
    double max_report_interval;  /* > 0 */
    double evict_after;          /* >= 0, or < 0: never */
    double idle_timeout;         /* > 0, or < 0: never */
    uint32_t max_sessions;       /* 1 .. LW_SESSIONS_MAX */
    int has_store;               /* due stuck sessions are asked about first */
} lw_sessions_config;

/* What the caller read before taking the lock: its clock, and the stall
 * clock's reading (sv_ok = 0: none, or unusable) with the token of the
 * stall clock it came from (lw_sessions_set_stall). */
typedef struct lw_sessions_reading {
    double raw;
    double sv;
    uint64_t token;
    int sv_ok;
} lw_sessions_reading;

enum {
    LW_SESSIONS_EV_STUCK = 1,
    LW_SESSIONS_EV_RECOVERED = 2,
    LW_SESSIONS_EV_EVICTED = 3,
    LW_SESSIONS_EV_ASK = 4 /* not an event: ask the store, then lw_sessions_settle */
};
enum { LW_SESSIONS_GHOST = 1, LW_SESSIONS_STUCK_TOO_LONG = 2, LW_SESSIONS_IDLE_TIMEOUT = 3 };

/* One event, with the session as its view shows it. `id` and `key` are
 * borrowed from the table, except for EVICTED, whose record is gone: the
 * references are then the caller's to release. */
typedef struct lw_sessions_event {
    int kind;
    int reason;               /* EVICTED */
    uint32_t index, gen;
    void *id, *key;
    int state;
    int stuck;                /* the view's */
    int has_task;
    int32_t queue_depth;
    int64_t view_reports;     /* the view's stuck_reports */
    int64_t reports;          /* the event's */
    double opened_at, state_since, last_progress;
    double at, age;
    double next_report_at;    /* NaN: none (evicted first) */
} lw_sessions_event;

typedef struct lw_sessions lw_sessions;

/* Status codes */
enum {
    LW_SESSIONS_OK = 0,
    LW_SESSIONS_EXISTS = 1, /* open: the id is open already */
    LW_SESSIONS_FULL = 2,   /* open: max_sessions reached */
    LW_SESSIONS_ENOMEM = 3,
    LW_SESSIONS_EQERR = 4   /* the eq callback failed (its error is the caller's) */
};

/* Equality of two different id objects whose stored hashes (32 bits)
 * match: 1, 0, or -1 (failed: the lookup stops and reports
 * LW_SESSIONS_EQERR). The stored id's record index is given, so the caller
 * can tell ids whose whole hashes differ apart without asking them. */
typedef int (*lw_sessions_eq)(void *stored_id, void *probe_id, uint32_t stored_index, void *ctx);

/* NULL when out of memory or for a start the wheel cannot take. */
lw_sessions *lw_sessions_new(const lw_sessions_config *cfg, double start);
/* Frees the table; the records' ids and keys must have been released
 * (lw_sessions_next walks them). */
void lw_sessions_free(lw_sessions *t);

/* The mutex. lock/trylock record the owner (any nonzero number naming the
 * calling thread), which unlock clears, so a thread can tell a call back
 * from under its own lock (owner == itself) from another thread's hold. */
void lw_sessions_lock(lw_sessions *t, unsigned long owner);
int lw_sessions_trylock(lw_sessions *t, unsigned long owner); /* 1: taken */
unsigned long lw_sessions_owner(const lw_sessions *t);
void lw_sessions_unlock(lw_sessions *t);
/* In a forked child: the mutex may have been held by a thread that is gone. */
void lw_sessions_after_fork_child(lw_sessions *t);

/* -- time ---------------------------------------------------------------- */
/* The registry's time for a reading: raw - stalled since set_stall, never
 * decreasing. Updates the stall bookkeeping and the latest time. */
double lw_sessions_now(lw_sessions *t, const lw_sessions_reading *r);
/* A new stall clock from now on (token: a number naming it, never reused;
 * first_ok/first: its first reading). The stall counted so far stays. */
void lw_sessions_set_stall(lw_sessions *t, uint64_t token, int first_ok, double first);
/* Where the time comes from when the table reads it itself (the status
 * thread, without the GIL): clock_native, the caller's clock is the
 * monotonic clock (lw_loop_now_ns); stall_fn(stall_ctx, now_ns), a stall
 * clock read in C (a native loop monitor's), or NULL; python_stall, a
 * stall clock only Python can read (then the table's latest time is the
 * best it knows). */
typedef int64_t (*lw_sessions_stall_fn)(const void *ctx, int64_t now_ns);
void lw_sessions_set_time_source(lw_sessions *t, int clock_native, lw_sessions_stall_fn stall_fn,
                                 const void *stall_ctx, int python_stall);
/* A reading taken in C: 1 and *r, or 0 when the clock is the caller's. */
int lw_sessions_read_native(const lw_sessions *t, lw_sessions_reading *r);
/* The latest stall reading kept (0 if none): a reading below it went back. */
int lw_sessions_stall_last(const lw_sessions *t, double *out);
double lw_sessions_latest(const lw_sessions *t);

/* -- sessions ------------------------------------------------------------- */
lw_sess *lw_sessions_record(const lw_sessions *t, uint32_t index);
/* The live record at index with generation gen, or NULL. */
lw_sess *lw_sessions_get(const lw_sessions *t, uint32_t index, uint32_t gen);
/* Find an id: 1 (*index set), 0 (absent), -1 (eq failed). */
int lw_sessions_find(lw_sessions *t, void *id, uint32_t hash, lw_sessions_eq eq, void *ctx,
                     uint32_t *index);
/* Open: OK (*index set; the table holds id and key from now on), EXISTS,
 * FULL, ENOMEM or EQERR. Nothing changes unless OK. */
int lw_sessions_open(lw_sessions *t, void *id, void *key, uint32_t hash, int state,
                     const lw_sessions_reading *r, lw_sessions_eq eq, void *ctx, uint32_t *index);
/* A heartbeat. Returns 1 when the session was stuck: *recovered is its
 * recovery event. */
int lw_sessions_progress(lw_sessions *t, uint32_t index, const lw_sessions_reading *r,
                         lw_sessions_event *recovered);
/* A state change (and the queue depth when depth_given; -1: None). Returns
 * 1 when the session was stuck and recovers: *recovered. */
int lw_sessions_set_state(lw_sessions *t, uint32_t index, int state, int depth_given,
                          int32_t depth, const lw_sessions_reading *r,
                          lw_sessions_event *recovered);
/* The session at index as its view shows it (kind 0; id and key borrowed). */
void lw_sessions_snapshot(const lw_sessions *t, uint32_t index, lw_sessions_event *out);
/* Remove a session: its id and key references become the caller's. */
void lw_sessions_remove(lw_sessions *t, uint32_t index, void **id, void **key);
void lw_sessions_set_task_flag(lw_sessions *t, uint32_t index, int has_task);

/* -- checking -------------------------------------------------------------- */
/* The registry's time for the reading, then every session due by it, in
 * order of their wakes (ties by index): reported stuck, evicted (stuck too
 * long, idle), or to be asked about (EV_ASK, when the table has a store).
 * *events stays valid until the next collect or settle. OK or ENOMEM
 * (nothing changed). */
int lw_sessions_collect(lw_sessions *t, const lw_sessions_reading *r, double *now,
                        const lw_sessions_event **events, size_t *count);
/* The store's answer for an EV_ASK: 1 and *out (stuck or evicted as a
 * ghost), or 0 when the session changed since (progress, state change,
 * closed) and is left as it is. */
int lw_sessions_settle(lw_sessions *t, uint32_t index, uint32_t gen, int present, double now,
                       lw_sessions_event *out);
/* A question that will get no answer (the check was interrupted): the
 * session goes back to the wheel, due at once, asked again at the next
 * check. Nothing when it changed since (as settle). */
void lw_sessions_unask(lw_sessions *t, uint32_t index, uint32_t gen);
/* The earliest time at which a check may find something: 1 and *out, or 0
 * when nothing is filed. Never later than the first due wake. */
int lw_sessions_next_wake(const lw_sessions *t, double *out);

/* -- reading ----------------------------------------------------------------- */
size_t lw_sessions_len(const lw_sessions *t);
int64_t lw_sessions_count(const lw_sessions *t, int state);
int64_t lw_sessions_queued(const lw_sessions *t); /* sum of the queue depths */
/* The first live record at or after `from`, or LW_SESSIONS_NIL. */
uint32_t lw_sessions_next(const lw_sessions *t, uint32_t from);
size_t lw_sessions_stuck_count(const lw_sessions *t);
/* The record index of the i-th stuck session (i < stuck_count). */
uint32_t lw_sessions_stuck_at(const lw_sessions *t, size_t i);
/* The stuck bookkeeping of a stuck record: 1, or 0 when not stuck. */
int lw_sessions_stuck_info(const lw_sessions *t, uint32_t index, int64_t *reports,
                           double *stuck_since, double *next_report_at);
/* Attach what the status server shows for a stuck session: a JSON
 * fragment (`"id":...,"key":...`), copied. 0 or ENOMEM. */
int lw_sessions_set_stuck_text(lw_sessions *t, uint32_t index, const char *text, size_t len);
/* Records filed in the wheel, records examined by collect (a counter). */
size_t lw_sessions_filed(const lw_sessions *t);
uint64_t lw_sessions_examined(const lw_sessions *t);
double lw_sessions_wheel_time(const lw_sessions *t);
/* Bytes of native memory held (records, index, stuck bookkeeping). */
size_t lw_sessions_memory(const lw_sessions *t);

/* For the status thread, without the GIL (takes the mutex): a JSON object
 * {"total":N,"counts":{...},"queued":Q,"stuck_count":S,"stuck":[...]}
 * with at most max_stuck stuck sessions, longest without progress first;
 * ages at the registry's time `now` (< 0: its latest time). Returns the
 * length written (the output is cut, and stays valid JSON, when `cap` is
 * too small), or 0 when cap < 256. */
size_t lw_sessions_write_live(lw_sessions *t, char *buf, size_t cap, size_t max_stuck, double now);

#ifdef __cplusplus
}
#endif

#endif /* LW_SESSIONS_H */
