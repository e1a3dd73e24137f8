/* Out-of-memory paths of ext/wheel/lw_wheel.c, which Python cannot reach: realloc
 * is wrapped (-Wl,--wrap=realloc) to fail on demand. An insert that cannot
 * grow the slab, or an expire() that cannot grow its due array half way,
 * must report LW_WHEEL_ENOMEM and leave every entry in place. */
#include "lw_wheel.h"

#include <stdio.h>
#include <stdlib.h>

static int fail_realloc = 0;
void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n) { return fail_realloc ? NULL : __real_realloc(p, n); }

#define CHECK(c)                                                           \
    do {                                                                   \
        if (!(c)) {                                                        \
            fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #c); \
            return 1;                                                      \
        }                                                                  \
    } while (0)

static size_t count_due(double *deadlines, size_t n, double now) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += deadlines[i] <= now;
    return k;
}

int main(void) {
    enum { N = 3000 };
    static double deadlines[N];
    lw_wheel *w;
    uint32_t h;
    const lw_wheel_due *due;
    size_t n;
    CHECK(lw_wheel_new(0.001, 0.0, &w) == LW_WHEEL_OK);
    for (int i = 0; i < N; i++) {
        deadlines[i] = 1.0 + (double)((i * 7919) % N) * 0.01;
        if (i == 1000) fail_realloc = 1; /* the slab must grow somewhere past 1000 */
        lw_wheel_status st = lw_wheel_insert(w, deadlines[i], &h);
        if (st == LW_WHEEL_ENOMEM) {
            CHECK(lw_wheel_len(w) == (size_t)i);
            fail_realloc = 0;
            CHECK(lw_wheel_insert(w, deadlines[i], &h) == LW_WHEEL_OK);
        }
        CHECK(lw_wheel_len(w) == (size_t)i + 1);
    }
    CHECK(fail_realloc == 0); /* the failure was hit */

    /* the first expire has no due array yet: fails at once, changes nothing */
    fail_realloc = 1;
    CHECK(lw_wheel_expire(w, 5.0, &due, &n) == LW_WHEEL_ENOMEM);
    CHECK(lw_wheel_len(w) == N);
    fail_realloc = 0;
    size_t want = count_due(deadlines, N, 5.0);
    CHECK(lw_wheel_expire(w, 5.0, &due, &n) == LW_WHEEL_OK && n == want && want > 64);
    for (size_t i = 1; i < n; i++) CHECK(due[i - 1].deadline <= due[i].deadline);
    size_t left = N - want;
    CHECK(lw_wheel_len(w) == left);

    /* now the due array has room for `want`: fail half way through a bigger batch */
    fail_realloc = 1;
    CHECK(lw_wheel_expire(w, 1e6, &due, &n) == LW_WHEEL_ENOMEM);
    CHECK(lw_wheel_len(w) == left);
    double next;
    CHECK(lw_wheel_next_deadline(w, &next) && next > 5.0);
    fail_realloc = 0;
    CHECK(lw_wheel_expire(w, 1e6, &due, &n) == LW_WHEEL_OK && n == left);
    for (size_t i = 1; i < n; i++) CHECK(due[i - 1].deadline <= due[i].deadline);
    CHECK(due[0].deadline > 5.0 && lw_wheel_len(w) == 0);
    lw_wheel_free(w);
    printf("ok\n");
    return 0;
}
