/* lw_hdr_record_single_writer() under the single-writer rule (lw_hdr.h):
 * it records exactly what lw_hdr_record() records; a reader may query while
 * the one writer records; writers that take turns under a mutex (an
 * ordered hand-over) lose no count. Built and run by
 * tests/c/test_hdr_threads_c.py, also under ThreadSanitizer. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "lw_hdr.h"

#define PER_WRITER 200000
#define TURN 1000 /* records per turn of the hand-over writers */

static lw_hdr *h;
static atomic_int done;
static pthread_mutex_t turn = PTHREAD_MUTEX_INITIALIZER;

static uint64_t next_random(uint64_t *state) {
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return *state >> 17;
}

/* The same calls into both kinds of recording; every observable must match. */
static int same_as_atomic(void) {
    lw_hdr *a, *s;
    uint64_t rnd = 42;
    if (lw_hdr_new(1, 1000000, 3, &a) != LW_HDR_OK || lw_hdr_new(1, 1000000, 3, &s) != LW_HDR_OK) return 0;
    for (int i = 0; i < 100000; i++) {
        /* values past highest_recordable (saturating) and counts of 0 too */
        int64_t value = (int64_t)(next_random(&rnd) % 3000000);
        int64_t count = (int64_t)(next_random(&rnd) % 4);
        if (lw_hdr_record(a, value, count) != lw_hdr_record_single_writer(s, value, count)) return 0;
    }
    int same = lw_hdr_total_count(a) == lw_hdr_total_count(s) &&
               lw_hdr_saturated_count(a) == lw_hdr_saturated_count(s) &&
               lw_hdr_min(a) == lw_hdr_min(s) && lw_hdr_max(a) == lw_hdr_max(s) &&
               lw_hdr_saturated_count(s) > 0;
    for (int32_t i = 0; i < lw_hdr_counts_len(a); i++)
        same = same && lw_hdr_count_at_index(a, i) == lw_hdr_count_at_index(s, i);
    lw_hdr_free(a);
    lw_hdr_free(s);
    return same;
}

static void *lone_writer(void *arg) {
    (void)arg;
    for (int64_t i = 0; i < PER_WRITER; i++) lw_hdr_record_single_writer(h, (i * 104729) % 5000000, 1);
    return NULL;
}

static void *reader(void *arg) {
    (void)arg;
    int64_t last_total = 0;
    while (!atomic_load(&done)) {
        int64_t total = lw_hdr_total_count(h);
        if (total < last_total) {
            fprintf(stderr, "total went backwards: %lld < %lld\n", (long long)total, (long long)last_total);
            exit(2);
        }
        last_total = total;
        (void)lw_hdr_value_at_percentile(h, 99.0);
        (void)lw_hdr_max(h);
    }
    return NULL;
}

static void *turn_taker(void *arg) {
    int64_t seed = (int64_t)(intptr_t)arg;
    for (int64_t done_here = 0; done_here < PER_WRITER; done_here += TURN) {
        pthread_mutex_lock(&turn);
        for (int64_t i = 0; i < TURN; i++)
            lw_hdr_record_single_writer(h, (seed * 7919 + (done_here + i) * 104729) % 5000000, 1);
        pthread_mutex_unlock(&turn);
    }
    return NULL;
}

static int64_t sum_of_counts(void) {
    int64_t sum = 0;
    for (int32_t i = lw_hdr_next_recorded(h, 0); i >= 0; i = lw_hdr_next_recorded(h, i + 1))
        sum += lw_hdr_count_at_index(h, i);
    return sum;
}

int main(void) {
    pthread_t w[2], r;
    int same = same_as_atomic();

    if (lw_hdr_new(1, 3600000000LL, 3, &h) != LW_HDR_OK) return 3;
    pthread_create(&r, NULL, reader, NULL);
    pthread_create(&w[0], NULL, lone_writer, NULL);
    pthread_join(w[0], NULL);
    atomic_store(&done, 1);
    pthread_join(r, NULL);
    int64_t lone = lw_hdr_total_count(h), lone_sum = sum_of_counts();
    lw_hdr_reset(h);

    for (int i = 0; i < 2; i++) pthread_create(&w[i], NULL, turn_taker, (void *)(intptr_t)(i + 1));
    for (int i = 0; i < 2; i++) pthread_join(w[i], NULL);
    int64_t turns = lw_hdr_total_count(h), turns_sum = sum_of_counts();
    lw_hdr_free(h);

    printf("same=%d lone=%lld/%lld turns=%lld/%lld\n", same, (long long)lone, (long long)lone_sum,
           (long long)turns, (long long)turns_sum);
    return same && lone == PER_WRITER && lone_sum == PER_WRITER && turns == 2 * PER_WRITER &&
                   turns_sum == 2 * PER_WRITER
               ? 0
               : 1;
}
