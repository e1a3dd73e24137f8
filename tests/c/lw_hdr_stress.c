/* Stress test of lw_hdr's concurrency guarantee: writer threads record
 * without any lock while a reader queries; afterwards not one count may be
 * missing. Built and run by tests/test_histogram_native_threads.py, also
 * under ThreadSanitizer. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "lw_hdr.h"

#define WRITERS 4
#define PER_WRITER 200000

static lw_hdr *h;
static atomic_int done;

static void *writer(void *arg) {
    int64_t seed = (int64_t)(intptr_t)arg;
    for (int64_t i = 0; i < PER_WRITER; i++) {
        int64_t v = (seed * 7919 + i * 104729) % 5000000;
        lw_hdr_record(h, v, 1);
    }
    return NULL;
}

static void *reader(void *arg) {
    (void)arg;
    int64_t last_total = 0;
    while (!done) {
        int64_t total = lw_hdr_total_count(h);
        if (total < last_total) {
            fprintf(stderr, "total went backwards: %lld < %lld\n", (long long)total, (long long)last_total);
            exit(2);
        }
        last_total = total;
        (void)lw_hdr_value_at_percentile(h, 99.0);
        (void)lw_hdr_mean(h);
        (void)lw_hdr_max(h);
    }
    return NULL;
}

int main(void) {
    pthread_t w[WRITERS], r;
    if (lw_hdr_new(1, 3600000000LL, 3, &h) != LW_HDR_OK) return 3;
    pthread_create(&r, NULL, reader, NULL);
    for (int i = 0; i < WRITERS; i++) pthread_create(&w[i], NULL, writer, (void *)(intptr_t)(i + 1));
    for (int i = 0; i < WRITERS; i++) pthread_join(w[i], NULL);
    done = 1;
    pthread_join(r, NULL);
    int64_t sum = 0;
    for (int32_t i = lw_hdr_next_recorded(h, 0); i >= 0; i = lw_hdr_next_recorded(h, i + 1))
        sum += lw_hdr_count_at_index(h, i);
    printf("total=%lld sum=%lld expected=%lld\n", (long long)lw_hdr_total_count(h), (long long)sum,
           (long long)WRITERS * PER_WRITER);
    int ok = lw_hdr_total_count(h) == (int64_t)WRITERS * PER_WRITER && sum == (int64_t)WRITERS * PER_WRITER;
    lw_hdr_free(h);
    return ok ? 0 : 1;
}
