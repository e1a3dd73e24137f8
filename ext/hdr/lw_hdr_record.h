/* The record path, inline: lw_hdr.c builds lw_hdr_record() and
 * lw_hdr_record_single_writer() from it, and a binding compiled together
 * with ext/hdr (the Python Histogram's record()) includes it to record
 * without a call. Not part of the API: see lw_hdr.h for the contract,
 * including the single-writer rule. */
#ifndef LW_HDR_RECORD_H
#define LW_HDR_RECORD_H

#include <assert.h>

#include "lw_hdr_internal.h"

static inline void lw_hdr__update_min_max(lw_hdr *h, int64_t value) {
    int64_t cur = lw_hdr__load(&h->min_value);
    while (value < cur &&
           !atomic_compare_exchange_weak_explicit(&h->min_value, &cur, value,
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
    cur = lw_hdr__load(&h->max_value);
    while (value > cur &&
           !atomic_compare_exchange_weak_explicit(&h->max_value, &cur, value,
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* The single writer's update: a relaxed load and a relaxed store, no locked
 * read-modify-write. Readers on other threads still see whole values. */
static inline void lw_hdr__add_single_writer(_Atomic int64_t *p, int64_t n) {
    atomic_store_explicit(p, lw_hdr__load(p) + n, memory_order_relaxed);
}

/* lw_hdr_record() (single_writer 0) or lw_hdr_record_single_writer()
 * (single_writer 1); pass a constant, so each caller gets straight-line
 * code. */
static inline int lw_hdr_record_inline(lw_hdr *h, int64_t value, int64_t count, int single_writer) {
    int saturated = 0;
    assert(value >= 0 && count >= 0);
    if (value > h->highest_recordable) {
        value = h->highest_recordable;
        saturated = 1;
        if (single_writer)
            lw_hdr__add_single_writer(&h->saturated_count, count);
        else
            atomic_fetch_add_explicit(&h->saturated_count, count, memory_order_relaxed);
    }
    if (count == 0) return saturated;
    int32_t index = lw_hdr__counts_index(h, value);
    assert(index >= 0 && index < h->counts_len);
    if (single_writer) {
        lw_hdr__add_single_writer(&h->counts[index], count);
        lw_hdr__add_single_writer(&h->total_count, count);
        if (value < lw_hdr__load(&h->min_value))
            atomic_store_explicit(&h->min_value, value, memory_order_relaxed);
        if (value > lw_hdr__load(&h->max_value))
            atomic_store_explicit(&h->max_value, value, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&h->counts[index], count, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->total_count, count, memory_order_relaxed);
        lw_hdr__update_min_max(h, value);
    }
    return saturated;
}

/* lw_hdr_total_count(), inline. */
static inline int64_t lw_hdr_total_count_inline(const lw_hdr *h) {
    return lw_hdr__load(&h->total_count);
}

#endif
