/* The session table: see lw_sessions.h. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lw_loop_clock.h"
#include "lw_mem.h"
#include "lw_sessions_internal.h"

#define NIL LW_SESSIONS_NIL
#define INITIAL_RECORDS 64
#define RESOLUTION 0.001 /* the wheel's tick: 1 ms */

static inline lw_sess *rec(const lw_sessions *t, uint32_t i) { return &t->recs[i]; }

/* The last sign of life: progress or a state change. */
static inline double activity(const lw_sess *r)
{
    return r->last_progress > r->state_since ? r->last_progress : r->state_since;
}

/* -- construction ---------------------------------------------------------- */
lw_sessions *lw_sessions_new(const lw_sessions_config *cfg, double start)
{
    lw_sessions *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->cfg = *cfg;
    if (pthread_mutex_init(&t->mutex, NULL) != 0) {
        free(t);
        return NULL;
    }
    atomic_init(&t->owner, 0);
    lw_sessions_stuck_init(&t->stuck);
    t->recs = lw_mem_alloc(INITIAL_RECORDS * sizeof(lw_sess));
    t->cap = INITIAL_RECORDS;
    t->free_head = NIL;
    if (!t->recs || lw_sessions_index_init(&t->index) != 0 ||
        lw_slots_init(&t->slots, RESOLUTION, start, sizeof(lw_sess), offsetof(lw_sess, links)) != 0) {
        lw_sessions_free(t);
        return NULL;
    }
    t->slots.base = (char *)t->recs;
    t->wheel_time = t->latest = start;
    return t;
}

void lw_sessions_free(lw_sessions *t)
{
    if (!t)
        return;
    lw_mem_free(t->recs, (size_t)t->cap * sizeof(lw_sess));
    lw_sessions_index_free(&t->index);
    lw_sessions_stuck_free(&t->stuck);
    free(t->events);
    free(t->due);
    pthread_mutex_destroy(&t->mutex);
    free(t);
}

/* -- the mutex ------------------------------------------------------------- */
void lw_sessions_lock(lw_sessions *t, unsigned long owner)
{
    pthread_mutex_lock(&t->mutex);
    atomic_store_explicit(&t->owner, owner, memory_order_relaxed);
}

int lw_sessions_trylock(lw_sessions *t, unsigned long owner)
{
    if (pthread_mutex_trylock(&t->mutex) != 0)
        return 0;
    atomic_store_explicit(&t->owner, owner, memory_order_relaxed);
    return 1;
}

unsigned long lw_sessions_owner(const lw_sessions *t)
{
    return atomic_load_explicit(&((lw_sessions *)t)->owner, memory_order_relaxed);
}

void lw_sessions_unlock(lw_sessions *t)
{
    /* Cleared first: a stale owner read by another thread is never its own. */
    atomic_store_explicit(&t->owner, 0, memory_order_relaxed);
    pthread_mutex_unlock(&t->mutex);
}

void lw_sessions_after_fork_child(lw_sessions *t)
{
    /* Only a thread that no longer exists can have held it (the status
     * thread reading, or a caller's __eq__ run under it, which changes
     * nothing): the table itself is consistent. */
    pthread_mutex_init(&t->mutex, NULL);
    atomic_store(&t->owner, 0);
}

/* -- time -------------------------------------------------------------------- */
double lw_sessions_now(lw_sessions *t, const lw_sessions_reading *r)
{
    double shift, now;
    if (r->sv_ok && r->token == t->stall_token) {
        if (!t->stall_ok) {
            t->stall_base = t->stall_last = r->sv;
            t->stall_ok = 1;
        } else if (r->sv > t->stall_last) {
            t->stall_last = r->sv;
        }
    }
    shift = t->shift + (t->stall_ok ? t->stall_last - t->stall_base : 0.0);
    now = r->raw - shift;
    if (now < t->latest)
        return t->latest;
    t->latest = now;
    return now;
}

void lw_sessions_set_stall(lw_sessions *t, uint64_t token, int first_ok, double first)
{
    if (t->stall_ok)
        t->shift += t->stall_last - t->stall_base;
    t->stall_token = token;
    t->stall_ok = first_ok;
    t->stall_base = t->stall_last = first_ok ? first : 0.0;
}

void lw_sessions_set_time_source(lw_sessions *t, int clock_native, lw_sessions_stall_fn stall_fn,
                                 const void *stall_ctx, int python_stall)
{
    t->clock_native = clock_native;
    t->stall_fn = stall_fn;
    t->stall_ctx = stall_ctx;
    t->python_stall = python_stall;
}

/* time.monotonic()'s conversion (CPython's _PyTime_AsSecondsDouble). */
static double seconds_of(int64_t ns)
{
    if (ns % 1000000000 == 0)
        return (double)(ns / 1000000000);
    return (double)ns / 1e9;
}

int lw_sessions_read_native(const lw_sessions *t, lw_sessions_reading *r)
{
    int64_t ns;
    if (!t->clock_native || t->python_stall)
        return 0;
    ns = lw_loop_now_ns();
    r->raw = seconds_of(ns);
    r->token = t->stall_token;
    r->sv_ok = t->stall_fn != NULL;
    r->sv = t->stall_fn ? (double)t->stall_fn(t->stall_ctx, ns) / 1e9 : 0.0;
    return 1;
}

int lw_sessions_stall_last(const lw_sessions *t, double *out)
{
    *out = t->stall_last;
    return t->stall_ok;
}

double lw_sessions_latest(const lw_sessions *t) { return t->latest; }

/* -- the wheel ---------------------------------------------------------------- */
/* A record's next interesting time, or INFINITY when nothing is ahead of it
 * (queued, or idle without an idle timeout). */
static double wake_of(const lw_sessions *t, uint32_t i, const lw_sess *r)
{
    int state = LW_SESS_STATE(r);
    if (LW_SESS_ACTIVE(state)) {
        const lw_sessions_stuck *s;
        double wake;
        if (!(LW_SESS_FLAGS(r) & LW_SESS_STUCK))
            return activity(r) + t->cfg.stuck_after;
        s = lw_sessions_stuck_of(&t->stuck, i);
        wake = s->next_report_at;
        if (t->cfg.evict_after >= 0 && s->stuck_since + t->cfg.evict_after < wake)
            wake = s->stuck_since + t->cfg.evict_after;
        return wake;
    }
    if (state == LW_SESS_IDLE && t->cfg.idle_timeout >= 0)
        return activity(r) + t->cfg.idle_timeout;
    return INFINITY;
}

static void file_at(lw_sessions *t, uint32_t i, double wake)
{
    /* Past the horizon (a registry nobody checked for years): filed at it,
     * refiled when it comes due. The horizon counts from the cursor, which
     * lags the latest check after a gap of more than 64**levels ticks (a
     * sweep moves it at most that far): counted from wheel_time, a wake
     * could land beyond the top level's span (wrapped into the wrong slot,
     * or a tick past 2**64: an undefined conversion in lw_slots_slot_for). */
    double limit = (t->slots.origin + (double)t->slots.cur) * t->slots.res +
                   lw_slots_horizon(&t->slots) - 1.0;
    lw_slots_file(&t->slots, i, wake <= limit ? wake : limit);
    t->filed++;
}

static void unfile(lw_sessions *t, uint32_t i)
{
    if (rec(t, i)->links.slot != LW_SLOTS_NONE) {
        lw_slots_unlink(&t->slots, i);
        t->filed--;
    }
}

/* File a record at its wake (wherever it was), or nowhere. */
static void refile(lw_sessions *t, uint32_t i)
{
    double wake;
    unfile(t, i);
    wake = wake_of(t, i, rec(t, i));
    if (wake < INFINITY)
        file_at(t, i, wake);
}

/* -- events ------------------------------------------------------------------- */
static void event_of(const lw_sessions *t, uint32_t i, int kind, double now, double age,
                     lw_sessions_event *ev)
{
    const lw_sess *r = rec(t, i);
    memset(ev, 0, sizeof(*ev));
    ev->kind = kind;
    ev->index = i;
    ev->gen = r->gen;
    ev->id = r->id;
    ev->key = r->key;
    ev->state = LW_SESS_STATE(r);
    ev->stuck = (LW_SESS_FLAGS(r) & LW_SESS_STUCK) != 0;
    ev->has_task = (LW_SESS_FLAGS(r) & LW_SESS_TASK) != 0;
    ev->queue_depth = r->queue_depth;
    ev->opened_at = r->opened_at;
    ev->state_since = r->state_since;
    ev->last_progress = r->last_progress;
    ev->at = now;
    ev->age = age;
    ev->next_report_at = NAN;
    if (ev->stuck)
        ev->view_reports = ev->reports = lw_sessions_stuck_of(&t->stuck, i)->reports;
}

void lw_sessions_snapshot(const lw_sessions *t, uint32_t index, lw_sessions_event *out)
{
    event_of(t, index, 0, t->latest, 0.0, out);
}

/* A stuck record recovers: its event (the view after it, the episode's
 * reports), and its bookkeeping goes. */
static void recover(lw_sessions *t, uint32_t i, double now, double age, lw_sessions_event *ev)
{
    lw_sess *r = rec(t, i);
    int64_t reports = lw_sessions_stuck_of(&t->stuck, i)->reports;
    lw_sessions_stuck_delete(&t->stuck, i);
    LW_SESS_FLAGS(r) &= (uint8_t)~LW_SESS_STUCK;
    event_of(t, i, LW_SESSIONS_EV_RECOVERED, now, age, ev);
    ev->reports = reports;
}

/* A due active session is (still) stuck: one more report, with backoff.
 * Room for a stuck entry is reserved. */
static void report(lw_sessions *t, uint32_t i, double now, lw_sessions_event *ev)
{
    lw_sess *r = rec(t, i);
    lw_sessions_stuck *s;
    double next;
    if (LW_SESS_FLAGS(r) & LW_SESS_STUCK) {
        s = lw_sessions_stuck_of(&t->stuck, i);
    } else {
        s = lw_sessions_stuck_add(&t->stuck, i);
        LW_SESS_FLAGS(r) |= LW_SESS_STUCK;
        s->stuck_since = activity(r) + t->cfg.stuck_after;
        s->reports = 0;
        s->interval = t->cfg.stuck_after;
    }
    s->reports++;
    s->interval = fmin(s->interval * t->cfg.report_backoff, t->cfg.max_report_interval);
    s->next_report_at = now + s->interval;
    refile(t, i);
    event_of(t, i, LW_SESSIONS_EV_STUCK, now, now - activity(r), ev);
    next = s->next_report_at;
    if (t->cfg.evict_after >= 0 && s->stuck_since + t->cfg.evict_after <= next)
        next = NAN;
    ev->next_report_at = next;
}

static void evict(lw_sessions *t, uint32_t i, int reason, double now, lw_sessions_event *ev)
{
    void *id, *key;
    event_of(t, i, LW_SESSIONS_EV_EVICTED, now, now - activity(rec(t, i)), ev);
    ev->reason = reason;
    lw_sessions_remove(t, i, &id, &key);
}

/* -- sessions -------------------------------------------------------------------- */
lw_sess *lw_sessions_record(const lw_sessions *t, uint32_t index) { return rec(t, index); }

lw_sess *lw_sessions_get(const lw_sessions *t, uint32_t index, uint32_t gen)
{
    lw_sess *r;
    if (index >= t->used)
        return NULL;
    r = rec(t, index);
    return r->id && r->gen == gen ? r : NULL;
}

int lw_sessions_find(lw_sessions *t, void *id, uint32_t hash, lw_sessions_eq eq, void *ctx,
                     uint32_t *index)
{
    return lw_sessions_index_find(t, id, hash, eq, ctx, index);
}

static int grow_records(lw_sessions *t)
{
    uint64_t want = (uint64_t)t->cap * 2;
    lw_sess *grown;
    if (want > LW_SESSIONS_MAX)
        want = LW_SESSIONS_MAX;
    if (want <= t->cap)
        return ENOMEM;
    grown = lw_mem_grow(t->recs, (size_t)t->cap * sizeof(lw_sess), (size_t)want * sizeof(lw_sess));
    if (!grown)
        return ENOMEM;
    t->recs = grown;
    t->slots.base = (char *)grown;
    t->cap = (uint32_t)want;
    return 0;
}

int lw_sessions_open(lw_sessions *t, void *id, void *key, uint32_t hash, int state,
                     const lw_sessions_reading *rd, lw_sessions_eq eq, void *ctx, uint32_t *index)
{
    double now = lw_sessions_now(t, rd), wake;
    uint32_t i;
    lw_sess *r;
    int found = lw_sessions_index_find(t, id, hash, eq, ctx, &i);
    if (found < 0)
        return LW_SESSIONS_EQERR;
    if (found)
        return LW_SESSIONS_EXISTS;
    if (t->len >= t->cfg.max_sessions)
        return LW_SESSIONS_FULL;
    if (lw_sessions_index_reserve(t) != 0)
        return LW_SESSIONS_ENOMEM;
    if (t->free_head != NIL) {
        i = t->free_head;
        t->free_head = rec(t, i)->links.next;
    } else {
        if (t->used == t->cap && grow_records(t) != 0)
            return LW_SESSIONS_ENOMEM;
        i = t->used++;
        rec(t, i)->gen = 1; /* so no handle is 0 */
    }
    r = rec(t, i);
    r->id = id;
    r->key = key;
    r->opened_at = r->state_since = r->last_progress = now;
    r->links.slot = LW_SLOTS_NONE;
    LW_SESS_STATE(r) = (uint8_t)state;
    LW_SESS_FLAGS(r) = 0;
    r->hash = hash;
    r->queue_depth = -1;
    lw_sessions_index_add(t, i);
    t->counts[state]++;
    t->len++;
    wake = wake_of(t, i, r);
    if (wake < INFINITY)
        file_at(t, i, wake);
    *index = i;
    return LW_SESSIONS_OK;
}

int lw_sessions_progress(lw_sessions *t, uint32_t i, const lw_sessions_reading *rd,
                         lw_sessions_event *recovered)
{
    double now = lw_sessions_now(t, rd);
    lw_sess *r = rec(t, i);
    uint8_t flags = LW_SESS_FLAGS(r);
    int was_stuck = (flags & LW_SESS_STUCK) != 0;
    if (was_stuck)
        recover(t, i, now, now - activity(r), recovered);
    r->last_progress = now;
    LW_SESS_FLAGS(r) &= (uint8_t)~LW_SESS_ASKING;
    /* The wake only moved later: a filed record stays where it is (refiled
     * when its slot comes due). A recovery's wake may be earlier, and a
     * record waiting for the store is filed nowhere. */
    if (was_stuck || r->links.slot == LW_SLOTS_NONE)
        refile(t, i);
    return was_stuck;
}

int lw_sessions_set_state(lw_sessions *t, uint32_t i, int state, int depth_given, int32_t depth,
                          const lw_sessions_reading *rd, lw_sessions_event *recovered)
{
    lw_sess *r = rec(t, i);
    double now, age;
    int was_stuck;
    if (depth_given) {
        t->queued += (int64_t)(depth > 0 ? depth : 0) - (r->queue_depth > 0 ? r->queue_depth : 0);
        r->queue_depth = depth;
    }
    if (state == LW_SESS_STATE(r))
        return 0;
    now = lw_sessions_now(t, rd);
    age = now - activity(r);
    t->counts[LW_SESS_STATE(r)]--;
    t->counts[state]++;
    LW_SESS_STATE(r) = (uint8_t)state;
    r->state_since = now;
    LW_SESS_FLAGS(r) &= (uint8_t)~LW_SESS_ASKING;
    was_stuck = (LW_SESS_FLAGS(r) & LW_SESS_STUCK) != 0;
    if (was_stuck)
        recover(t, i, now, age, recovered);
    refile(t, i);
    return was_stuck;
}

void lw_sessions_remove(lw_sessions *t, uint32_t i, void **id, void **key)
{
    lw_sess *r = rec(t, i);
    unfile(t, i);
    lw_sessions_index_delete(t, i);
    if (LW_SESS_FLAGS(r) & LW_SESS_STUCK)
        lw_sessions_stuck_delete(&t->stuck, i);
    t->counts[LW_SESS_STATE(r)]--;
    if (r->queue_depth > 0)
        t->queued -= r->queue_depth;
    t->len--;
    *id = r->id;
    *key = r->key;
    r->id = r->key = NULL;
    LW_SESS_FLAGS(r) = 0;
    r->gen++;
    r->links.next = t->free_head;
    t->free_head = i;
}

void lw_sessions_set_task_flag(lw_sessions *t, uint32_t i, int has_task)
{
    lw_sess *r = rec(t, i);
    if (has_task)
        LW_SESS_FLAGS(r) |= LW_SESS_TASK;
    else
        LW_SESS_FLAGS(r) &= (uint8_t)~LW_SESS_TASK;
}

/* -- checking -------------------------------------------------------------------- */
static int push_due(lw_sessions *t, size_t *n, uint32_t i, double wake)
{
    if (*n == t->due_cap) {
        size_t want = t->due_cap < 64 ? 64 : t->due_cap * 2;
        void *grown = realloc(t->due, want * sizeof(*t->due));
        if (!grown)
            return 0;
        t->due = grown;
        t->due_cap = want;
    }
    t->due[*n].wake = wake;
    t->due[*n].index = i;
    (*n)++;
    return 1;
}

static int due_order(const void *a, const void *b)
{
    const struct lw_sessions_due *x = a, *y = b;
    if (x->wake != y->wake)
        return x->wake < y->wake ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* A record taken off its slot (lw_slots_take: still marked and counted as
 * filed) that is not due: file it anew at its wake, relative to the cursor. */
static void refile_taken(lw_sessions *t, uint32_t i, double wake)
{
    t->filed--;
    rec(t, i)->links.slot = LW_SLOTS_NONE;
    if (wake < INFINITY)
        file_at(t, i, wake);
}

/* Take every record whose wake is <= now off the wheel into t->due,
 * refiling those whose slot came due early. 0, or ENOMEM (every record
 * taken so far filed again: nothing is lost). */
static int sweep(lw_sessions *t, double now, size_t *n_due)
{
    lw_slots *sl = &t->slots;
    double q = lw_slots_tick_of(sl, now);
    int failed = 0;
    *n_due = 0;
    if (q < (double)sl->cur) {
        /* Before the cursor only the current slot can hold due records. */
        uint32_t h = sl->heads[sl->cur & (LW_SLOTS_PER_LEVEL - 1)];
        while (h != NIL && !failed) {
            uint32_t next = rec(t, h)->links.next;
            double wake = wake_of(t, h, rec(t, h));
            t->examined++;
            if (wake <= now) {
                unfile(t, h);
                if (!push_due(t, n_due, h, wake)) {
                    file_at(t, h, wake);
                    failed = 1;
                }
            }
            h = next;
        }
    } else {
        uint64_t limit = sl->cur + ((uint64_t)1 << (LW_SLOTS_BITS * sl->levels));
        /* Past one span of the top level everything filed is due (nothing
         * is filed further ahead), so the cursor may go straight to now's
         * tick, however far: a check years after the last one files what
         * follows relative to now. Only a tick count too large for the
         * cursor (a `now` of about 10**16 s) stops at one span. */
        uint64_t target = q < (double)limit ? (uint64_t)q : q < LW_SLOTS_FAR_TICK ? (uint64_t)q : limit;
        unsigned slot;
        uint64_t start;
        while (!failed && lw_slots_first(sl, &slot, &start) && start <= target) {
            uint32_t h;
            sl->cur = start;
            h = lw_slots_take(sl, slot);
            while (h != NIL) {
                uint32_t next = rec(t, h)->links.next;
                double wake = wake_of(t, h, rec(t, h));
                t->examined++;
                if (slot >= LW_SLOTS_PER_LEVEL || failed || wake > now || !push_due(t, n_due, h, wake)) {
                    /* A coarse slot cascades; a record filed early (its
                     * heartbeats moved it later) or not yet due is filed
                     * again; out of memory, it waits for the next check. */
                    failed = failed || (slot < LW_SLOTS_PER_LEVEL && wake <= now);
                    refile_taken(t, h, wake);
                } else {
                    rec(t, h)->links.slot = LW_SLOTS_NONE;
                    t->filed--;
                }
                h = next;
            }
            if (slot < LW_SLOTS_PER_LEVEL && sl->heads[slot] != NIL)
                break; /* start == target: what stays is not due yet */
        }
        if (!failed && target > sl->cur)
            sl->cur = target;
    }
    if (failed) {
        for (size_t k = 0; k < *n_due; k++)
            file_at(t, t->due[k].index, t->due[k].wake);
        *n_due = 0;
        return ENOMEM;
    }
    return 0;
}

int lw_sessions_collect(lw_sessions *t, const lw_sessions_reading *rd, double *now_out,
                        const lw_sessions_event **events, size_t *count)
{
    double now = lw_sessions_now(t, rd);
    size_t n_due = 0, n = 0;
    /* Buffers grown by one huge check (10**6 sessions due at once) are let
     * go once checks are small again: the next huge one grows them anew. */
    if (t->due_cap > 65536 && t->last_due * 8 < t->due_cap) {
        free(t->due);
        free(t->events);
        t->due = NULL;
        t->events = NULL;
        t->due_cap = t->events_cap = 0;
    }
    *now_out = now;
    *events = t->events;
    *count = 0;
    if (sweep(t, now, &n_due) != 0)
        return LW_SESSIONS_ENOMEM;
    t->last_due = n_due;
    if (now > t->wheel_time)
        t->wheel_time = now;
    if (n_due == 0)
        return LW_SESSIONS_OK;
    if (n_due > t->events_cap) {
        lw_sessions_event *grown = realloc(t->events, n_due * sizeof(*grown));
        if (!grown)
            goto no_memory;
        t->events = grown;
        t->events_cap = n_due;
    }
    if (lw_sessions_stuck_reserve(&t->stuck, n_due) != 0)
        goto no_memory;
    if (n_due > 1)
        qsort(t->due, n_due, sizeof(*t->due), due_order);
    for (size_t k = 0; k < n_due; k++) {
        uint32_t i = t->due[k].index;
        lw_sess *r = rec(t, i);
        int state = LW_SESS_STATE(r);
        lw_sessions_event *ev = &t->events[n];
        if (LW_SESS_ACTIVE(state)) {
            const lw_sessions_stuck *s = lw_sessions_stuck_of(&t->stuck, i);
            if (s && t->cfg.evict_after >= 0 && now >= s->stuck_since + t->cfg.evict_after) {
                evict(t, i, LW_SESSIONS_STUCK_TOO_LONG, now, ev);
            } else if (t->cfg.has_store) {
                LW_SESS_FLAGS(r) |= LW_SESS_ASKING;
                memset(ev, 0, sizeof(*ev));
                ev->kind = LW_SESSIONS_EV_ASK;
                ev->index = i;
                ev->gen = r->gen;
                ev->id = r->id;
            } else {
                report(t, i, now, ev);
            }
        } else if (state == LW_SESS_IDLE && t->cfg.idle_timeout >= 0) {
            evict(t, i, LW_SESSIONS_IDLE_TIMEOUT, now, ev);
        } else {
            continue; /* nothing ahead of it: left unfiled */
        }
        n++;
    }
    *events = t->events;
    *count = n;
    return LW_SESSIONS_OK;

no_memory:
    for (size_t k = 0; k < n_due; k++)
        file_at(t, t->due[k].index, t->due[k].wake);
    return LW_SESSIONS_ENOMEM;
}

int lw_sessions_settle(lw_sessions *t, uint32_t index, uint32_t gen, int present, double now,
                       lw_sessions_event *out)
{
    lw_sess *r = lw_sessions_get(t, index, gen);
    if (!r || !(LW_SESS_FLAGS(r) & LW_SESS_ASKING))
        return 0;
    LW_SESS_FLAGS(r) &= (uint8_t)~LW_SESS_ASKING;
    if (!present) {
        evict(t, index, LW_SESSIONS_GHOST, now, out);
        return 1;
    }
    if (!(LW_SESS_FLAGS(r) & LW_SESS_STUCK) && lw_sessions_stuck_reserve(&t->stuck, 1) != 0) {
        refile(t, index); /* due again at the next check, asked again */
        return -1;
    }
    report(t, index, now, out);
    return 1;
}

void lw_sessions_unask(lw_sessions *t, uint32_t index, uint32_t gen)
{
    lw_sess *r = lw_sessions_get(t, index, gen);
    if (!r || !(LW_SESS_FLAGS(r) & LW_SESS_ASKING))
        return;
    LW_SESS_FLAGS(r) &= (uint8_t)~LW_SESS_ASKING;
    refile(t, index);
}

int lw_sessions_next_wake(const lw_sessions *t, double *out)
{
    const lw_slots *sl = &t->slots;
    unsigned slot;
    uint64_t start;
    double best = INFINITY;
    if (!lw_slots_first(sl, &slot, &start))
        return 0;
    if (slot < LW_SLOTS_PER_LEVEL) {
        for (uint32_t h = sl->heads[slot]; h != NIL; h = rec(t, h)->links.next) {
            double wake = wake_of(t, h, rec(t, h));
            if (wake < best)
                best = wake;
        }
        /* Records filed early (moved later by heartbeats since) do not
         * bound the other slots: the earliest wake is exact only when it
         * falls in this slot's own tick. */
        if (best < lw_slots_tick_start_time(sl, start + 1)) {
            *out = best;
            return 1;
        }
    }
    *out = lw_slots_tick_start_time(sl, start);
    return 1;
}

/* -- reading ---------------------------------------------------------------------- */
size_t lw_sessions_len(const lw_sessions *t) { return t->len; }
int64_t lw_sessions_count(const lw_sessions *t, int state) { return t->counts[state]; }
int64_t lw_sessions_queued(const lw_sessions *t) { return t->queued; }

uint32_t lw_sessions_next(const lw_sessions *t, uint32_t from)
{
    for (uint32_t i = from; i < t->used; i++)
        if (rec(t, i)->id)
            return i;
    return NIL;
}

size_t lw_sessions_stuck_count(const lw_sessions *t) { return t->stuck.len; }
uint32_t lw_sessions_stuck_at(const lw_sessions *t, size_t i) { return t->stuck.items[i].index; }

int lw_sessions_stuck_info(const lw_sessions *t, uint32_t index, int64_t *reports,
                           double *stuck_since, double *next_report_at)
{
    const lw_sessions_stuck *s = lw_sessions_stuck_of(&t->stuck, index);
    if (!s)
        return 0;
    *reports = s->reports;
    *stuck_since = s->stuck_since;
    *next_report_at = s->next_report_at;
    return 1;
}

int lw_sessions_set_stuck_text(lw_sessions *t, uint32_t index, const char *text, size_t len)
{
    lw_sessions_stuck *s = lw_sessions_stuck_of(&t->stuck, index);
    char *copy;
    if (!s)
        return 0;
    copy = malloc(len + 1);
    if (!copy)
        return ENOMEM;
    memcpy(copy, text, len);
    copy[len] = '\0';
    free(s->text);
    s->text = copy;
    s->text_len = len;
    return 0;
}

size_t lw_sessions_filed(const lw_sessions *t) { return t->filed; }
uint64_t lw_sessions_examined(const lw_sessions *t) { return t->examined; }
double lw_sessions_wheel_time(const lw_sessions *t) { return t->wheel_time; }

size_t lw_sessions_memory(const lw_sessions *t)
{
    return sizeof(*t) + (size_t)t->used * sizeof(lw_sess) + lw_sessions_index_memory(&t->index) +
           lw_sessions_stuck_memory(&t->stuck) + t->events_cap * sizeof(lw_sessions_event) +
           t->due_cap * sizeof(*t->due);
}
