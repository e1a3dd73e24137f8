/* The session table as the status server's thread serves it, without the
 * GIL: counts and the stuck sessions, read under the table's mutex. The
 * stuck sessions' ids and keys are the text the binding attached when they
 * became stuck (lw_sessions_set_stuck_text), already escaped for JSON. */
#define _POSIX_C_SOURCE 200809L /* nanosleep */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lw_sessions_internal.h"

static const char *const STATE_NAMES[LW_SESS_STATES] = {"idle", "queued", "processing", "waiting"};

typedef struct out {
    char *buf;
    size_t cap, len; /* cap excludes the room kept to close the document */
    int full;
} out;

static void put(out *o, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (o->full)
        return;
    va_start(ap, fmt);
    n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len) {
        o->full = 1;
        return;
    }
    o->len += (size_t)n;
}

typedef struct ranked {
    double since_progress;
    size_t position;
} ranked;

static int longest_first(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->since_progress != y->since_progress)
        return x->since_progress > y->since_progress ? -1 : 1;
    return (x->position > y->position) - (x->position < y->position);
}

size_t lw_sessions_write_live(lw_sessions *t, char *buf, size_t cap, size_t max_stuck, double now)
{
    out o;
    ranked *order = NULL;
    size_t n_stuck, listed = 0;
    if (cap < 256)
        return 0;
    o.buf = buf;
    o.cap = cap - 4; /* "]}" and the terminator always fit */
    o.len = 0;
    o.full = 0;
    lw_sessions_reading r;
    /* The table's lock: held by a Python thread only briefly, or while an
     * id's __eq__ runs, which needs the GIL the blocked loop may hold: do
     * not wait on it for long. */
    for (int tries = 0; !lw_sessions_trylock(t, 0); tries++) {
        struct timespec ms = {0, 1000000};
        if (tries == 20) {
            snprintf(buf, cap, "{\"unavailable\":\"the session table is busy\"}");
            return strlen(buf);
        }
        nanosleep(&ms, NULL);
    }
    if (now < 0)
        now = lw_sessions_read_native(t, &r) ? lw_sessions_now(t, &r) : t->latest;
    n_stuck = t->stuck.len;
    put(&o, "{\"total\":%zu,\"counts\":{", t->len);
    for (int s = 0; s < LW_SESS_STATES; s++)
        put(&o, "%s\"%s\":%lld", s ? "," : "", STATE_NAMES[s], (long long)t->counts[s]);
    put(&o, "},\"queued\":%lld,\"stuck_count\":%zu,\"stuck\":[", (long long)t->queued, n_stuck);
    if (n_stuck && max_stuck)
        order = malloc(n_stuck * sizeof(*order));
    if (order) {
        for (size_t k = 0; k < n_stuck; k++) {
            order[k].since_progress = now - t->recs[t->stuck.items[k].index].last_progress;
            order[k].position = k;
        }
        qsort(order, n_stuck, sizeof(*order), longest_first);
        for (size_t k = 0; k < n_stuck && listed < max_stuck && !o.full; k++) {
            const lw_sessions_stuck *s = &t->stuck.items[order[k].position];
            const lw_sess *r = &t->recs[s->index];
            size_t mark = o.len;
            put(&o, "%s{%s,\"state\":\"%s\",\"age_s\":%.3f,\"since_progress_s\":%.3f,", listed ? "," : "",
                s->text ? s->text : "\"id\":null,\"key\":null", STATE_NAMES[LW_SESS_STATE(r)], now - r->state_since, order[k].since_progress);
            if (r->queue_depth >= 0)
                put(&o, "\"queue_depth\":%d,", (int)r->queue_depth);
            else
                put(&o, "\"queue_depth\":null,");
            put(&o, "\"reports\":%lld}", (long long)s->reports);
            if (o.full) {
                o.len = mark; /* an entry that does not fit is left out whole */
                break;
            }
            listed++;
        }
        free(order);
    }
    lw_sessions_unlock(t);
    o.buf[o.len++] = ']';
    o.buf[o.len++] = '}';
    o.buf[o.len] = '\0';
    return o.len;
}
