/* Out-of-memory paths of ext/sessions (the session table), which Python
 * cannot reach: every allocator it uses (malloc, calloc, realloc, mmap,
 * mremap) is wrapped (-Wl,--wrap=...) to fail at random while `failing`.
 *
 * Two tables get the same random operations: A with allocations failing,
 * B without. A call on A that reports LW_SESSIONS_ENOMEM must have changed
 * nothing: it is retried with allocations working, and from then on A and
 * B must agree on everything observable (lengths, counts, what is filed,
 * what is stuck, the events of every check, record by record). A store
 * answer that cannot be recorded (settle's -1) must leave the session due,
 * asked again at the next check.
 *
 *   sessions_enomem SEED OPERATIONS   exit status 0: every check held */
#define _GNU_SOURCE

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "lw_sessions.h"

/* -- the allocators, failing on demand ---------------------------------- */
static int failing = 0;
static uint64_t rng = 88172645463325252ull;

static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int fail_now(void) { return failing && next_random() % 4 == 0; }

void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
void *__real_mmap(void *a, size_t n, int prot, int flags, int fd, off_t off);
void *__real_mremap(void *a, size_t old, size_t n, int flags, ...);
void *__wrap_malloc(size_t n) { return fail_now() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t a, size_t b) { return fail_now() ? NULL : __real_calloc(a, b); }
void *__wrap_realloc(void *p, size_t n) { return fail_now() ? NULL : __real_realloc(p, n); }
void *__wrap_mmap(void *a, size_t n, int prot, int flags, int fd, off_t off)
{
    return fail_now() ? MAP_FAILED : __real_mmap(a, n, prot, flags, fd, off);
}
void *__wrap_mremap(void *a, size_t old, size_t n, int flags, ...)
{
    return fail_now() ? MAP_FAILED : __real_mremap(a, old, n, flags);
}

#define CHECK(c)                                                                  \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "FAILED %s:%d (operation %d): %s\n", __FILE__, __LINE__, \
                    op, #c);                                                      \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

static int op;

/* Ids are pointers to ints: two different pointers to equal ints are the
 * same id, so lookups run the eq callback. */
static int eq(void *stored, void *probe, uint32_t index, void *ctx)
{
    (void)ctx;
    (void)index;
    return *(int *)stored == *(int *)probe;
}

enum { IDS = 300 };
static int keys[IDS];       /* what ids point to */
static int probes[IDS];     /* other pointers to the same values */
static uint32_t hash_of(int k) { return (uint32_t)k * 2654435761u ^ (uint32_t)(k % 7); }

static lw_sessions_reading at(double t)
{
    lw_sessions_reading r;
    memset(&r, 0, sizeof r);
    r.raw = t;
    return r;
}

static void same_state(lw_sessions *a, lw_sessions *b)
{
    CHECK(lw_sessions_len(a) == lw_sessions_len(b));
    CHECK(lw_sessions_filed(a) == lw_sessions_filed(b));
    CHECK(lw_sessions_stuck_count(a) == lw_sessions_stuck_count(b));
    CHECK(lw_sessions_queued(a) == lw_sessions_queued(b));
    for (int s = 0; s < 4; s++)
        CHECK(lw_sessions_count(a, s) == lw_sessions_count(b, s));
    for (int k = 0; k < IDS; k++) {
        uint32_t ia, ib;
        int fa = lw_sessions_find(a, &probes[k], hash_of(k), eq, NULL, &ia);
        int fb = lw_sessions_find(b, &probes[k], hash_of(k), eq, NULL, &ib);
        CHECK(fa == fb);
        if (fa == 1) {
            lw_sess *ra = lw_sessions_record(a, ia), *rb = lw_sessions_record(b, ib);
            CHECK(ia == ib && ra->gen == rb->gen);
            CHECK(ra->last_progress == rb->last_progress && ra->state_since == rb->state_since);
            CHECK(ra->links.tag[0] == rb->links.tag[0] && ra->links.tag[1] == rb->links.tag[1]);
            CHECK(ra->queue_depth == rb->queue_depth);
        }
    }
}

typedef struct snapshot {
    size_t len, filed, stuck;
    int64_t queued, counts[4];
} snapshot;

static snapshot snap(const lw_sessions *t)
{
    snapshot s;
    s.len = lw_sessions_len(t);
    s.filed = lw_sessions_filed(t);
    s.stuck = lw_sessions_stuck_count(t);
    s.queued = lw_sessions_queued(t);
    for (int i = 0; i < 4; i++)
        s.counts[i] = lw_sessions_count(t, i);
    return s;
}

static int same_snapshot(snapshot x, snapshot y)
{
    return x.len == y.len && x.filed == y.filed && x.stuck == y.stuck && x.queued == y.queued &&
           !memcmp(x.counts, y.counts, sizeof x.counts);
}

static void same_events(const lw_sessions_event *ea, size_t na, const lw_sessions_event *eb,
                        size_t nb)
{
    CHECK(na == nb);
    for (size_t i = 0; i < na; i++) {
        CHECK(ea[i].kind == eb[i].kind && ea[i].index == eb[i].index);
        CHECK(ea[i].reason == eb[i].reason && ea[i].reports == eb[i].reports);
        CHECK(ea[i].age == eb[i].age);
        CHECK(ea[i].next_report_at == eb[i].next_report_at ||
              (isnan(ea[i].next_report_at) && isnan(eb[i].next_report_at)));
    }
}

static int present_in_store(void *id) { return *(int *)id % 5 != 0; }

int main(int argc, char **argv)
{
    unsigned seed = argc > 1 ? (unsigned)atoi(argv[1]) : 1;
    int ops = argc > 2 ? atoi(argv[2]) : 20000, enomem = 0, settle_enomem = 0;
    lw_sessions_config cfg = {2.0, 2.0, 16.0, 20.0, 30.0, 250, 0};
    lw_sessions *a, *b;
    double t = 100.0;
    srand(seed);
    rng ^= seed;
    cfg.has_store = seed % 2;
    for (int k = 0; k < IDS; k++)
        keys[k] = probes[k] = k;
    a = lw_sessions_new(&cfg, t);
    b = lw_sessions_new(&cfg, t);
    if (!a || !b)
        return 2;
    for (op = 0; op < ops; op++) {
        if (op % 500 == 499) { /* start over: every growth path again */
            lw_sessions_free(a);
            lw_sessions_free(b);
            a = lw_sessions_new(&cfg, t);
            b = lw_sessions_new(&cfg, t);
            if (!a || !b)
                return 2;
        }
        int k = rand() % IDS, what = rand() % 10, st, state = rand() % 4;
        lw_sessions_reading r = at(t);
        uint32_t ia, ib;
        lw_sessions_event ev_a, ev_b;
        if (what <= 2) { /* open: the only call besides checks that allocates */
            snapshot before = snap(a);
            int sb;
            failing = 1;
            while ((st = lw_sessions_open(a, &keys[k], NULL, hash_of(k), state, &r, eq, NULL, &ia)) ==
                   LW_SESSIONS_ENOMEM) {
                enomem++;
                CHECK(same_snapshot(before, snap(a)));
                CHECK(lw_sessions_find(a, &probes[k], hash_of(k), eq, NULL, &ia) == 0);
            }
            failing = 0;
            sb = lw_sessions_open(b, &keys[k], NULL, hash_of(k), state, &r, eq, NULL, &ib);
            CHECK(st == sb);
            if (st == LW_SESSIONS_OK)
                CHECK(ia == ib);
        } else if (what <= 4) {
            if (lw_sessions_find(a, &probes[k], hash_of(k), eq, NULL, &ia) == 1) {
                lw_sessions_find(b, &probes[k], hash_of(k), eq, NULL, &ib);
                CHECK(lw_sessions_progress(a, ia, &r, &ev_a) == lw_sessions_progress(b, ib, &r, &ev_b));
            }
        } else if (what <= 6) {
            if (lw_sessions_find(a, &probes[k], hash_of(k), eq, NULL, &ia) == 1) {
                int depth_given = rand() % 2, depth = rand() % 5;
                lw_sessions_find(b, &probes[k], hash_of(k), eq, NULL, &ib);
                CHECK(lw_sessions_set_state(a, ia, state, depth_given, depth, &r, &ev_a) ==
                      lw_sessions_set_state(b, ib, state, depth_given, depth, &r, &ev_b));
            }
        } else if (what == 7) {
            if (lw_sessions_find(a, &probes[k], hash_of(k), eq, NULL, &ia) == 1) {
                void *id, *key;
                lw_sessions_find(b, &probes[k], hash_of(k), eq, NULL, &ib);
                lw_sessions_remove(a, ia, &id, &key);
                lw_sessions_remove(b, ib, &id, &key);
            }
        } else { /* time passes, then a check on both */
            const lw_sessions_event *ea, *eb;
            size_t na, nb;
            double now_a, now_b;
            static lw_sessions_event copy[4096];
            t += (double)(rand() % 4000) / 1000.0;
            r = at(t);
            CHECK(lw_sessions_collect(b, &r, &now_b, &eb, &nb) == LW_SESSIONS_OK);
            CHECK(nb <= 4096);
            if (nb)
                memcpy(copy, eb, nb * sizeof *eb);
            snapshot before = snap(a);
            failing = 1;
            while ((st = lw_sessions_collect(a, &r, &now_a, &ea, &na)) == LW_SESSIONS_ENOMEM) {
                enomem++;
                CHECK(na == 0 && same_snapshot(before, snap(a)));
            }
            failing = 0;
            CHECK(now_a == now_b);
            same_events(ea, na, copy, nb);
            for (size_t i = 0; i < na; i++) { /* answer the store's questions alike */
                if (copy[i].kind != LW_SESSIONS_EV_ASK)
                    continue;
                int present = present_in_store(copy[i].id);
                lw_sessions_event oa, ob;
                int sb = lw_sessions_settle(b, copy[i].index, copy[i].gen, present, now_b, &ob);
                int sa;
                failing = 1;
                sa = lw_sessions_settle(a, copy[i].index, copy[i].gen, present, now_a, &oa);
                failing = 0;
                if (sa < 0) {
                    /* It could not be recorded: left due, asked again at once. */
                    const lw_sessions_event *again;
                    size_t n_again, j;
                    double now_again;
                    settle_enomem++;
                    CHECK(lw_sessions_collect(a, &r, &now_again, &again, &n_again) == LW_SESSIONS_OK);
                    for (j = 0; j < n_again; j++)
                        if (again[j].index == copy[i].index && again[j].kind == LW_SESSIONS_EV_ASK)
                            break;
                    CHECK(j < n_again);
                    sa = lw_sessions_settle(a, copy[i].index, copy[i].gen, present, now_a, &oa);
                }
                CHECK(sa == sb);
                if (sa == 1)
                    same_events(&oa, 1, &ob, 1);
            }
        }
        same_state(a, b);
    }
    printf("ok %d operations, %d out-of-memory failures, %d store answers retried\n", ops, enomem,
           settle_enomem);
    lw_sessions_free(a);
    lw_sessions_free(b);
    return enomem > 0 ? 0 : 3; /* the failures must have been met */
}
