/* The session table given clock readings far ahead of its wheel's cursor
 * (a caller's clock that jumps, to 1e17 s say: finite, so the registry
 * takes it), built with -fsanitize=float-cast-overflow (not part of
 * -fsanitize=undefined): a wake filed more than 2**64 ticks ahead of the cursor must never reach
 * lw_slots_slot_for's conversion of its tick to uint64_t, and the table
 * must stay consistent. (How late a due session is reported after such a
 * jump is test_a_check_years_after_the_last_one_still_reports_on_time's
 * business: here only the conversions and the bookkeeping.)
 *
 *   sessions_far_clock   exit status 0: every check held */
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "lw_sessions.h"

#define N 5

static int same(void *stored, void *probe, uint32_t index, void *ctx)
{
    (void)ctx;
    (void)index;
    return stored == probe;
}

#define CHECK(c)                                                        \
    do {                                                                \
        if (!(c)) {                                                     \
            fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #c); \
            return 1;                                                   \
        }                                                               \
    } while (0)

/* A table whose sessions are open at 1000 s, checked at `far`, then at
 * later readings: 0, or 1 when a check failed. */
static int jump(double far)
{
    const double times[] = {far, far * 1.5, far * 3.0};
    lw_sessions_config cfg = {5.0, 2.0, 1800.0, -1.0, -1.0, 100, 0};
    lw_sessions *t = lw_sessions_new(&cfg, 1000.0);
    lw_sessions_reading r = {1000.0, 0.0, 0, 0};
    int ids[N];
    CHECK(t != NULL);
    for (int k = 0; k < N; k++) {
        uint32_t index;
        CHECK(lw_sessions_open(t, &ids[k], NULL, (uint32_t)k, LW_SESS_PROCESSING, &r, same, NULL,
                               &index) == LW_SESSIONS_OK);
    }
    for (size_t step = 0; step < sizeof(times) / sizeof(times[0]); step++) {
        const lw_sessions_event *events;
        size_t count;
        double now, wake;
        r.raw = times[step];
        CHECK(lw_sessions_collect(t, &r, &now, &events, &count) == LW_SESSIONS_OK);
        CHECK(now == times[step]);
        CHECK(count <= N);
        for (size_t k = 0; k < count; k++)
            CHECK(events[k].kind == LW_SESSIONS_EV_STUCK);
        CHECK(lw_sessions_filed(t) == N && lw_sessions_len(t) == N);
        CHECK(lw_sessions_next_wake(t, &wake) == 1);
    }
    lw_sessions_free(t);
    return 0;
}

int main(void)
{
    static const double far[] = {1e12, 1e17, 1e20, 1e300};
    for (size_t k = 0; k < sizeof(far) / sizeof(far[0]); k++)
        if (jump(far[k]) != 0)
            return 1;
    printf("ok\n");
    return 0;
}
