/* Layout shared by lw_hdr.c and lw_hdr_codec.c; not part of the API. */
#ifndef LW_HDR_INTERNAL_H
#define LW_HDR_INTERNAL_H

#include <stdatomic.h>
#include "lw_hdr.h"

struct lw_hdr {
    int64_t lowest_trackable;
    int64_t highest_trackable;
    int64_t highest_recordable; /* the top of the last bucket of counts[] */
    int64_t sub_bucket_mask;
    int32_t significant_figures;
    int32_t unit_magnitude;
    int32_t sub_bucket_half_count_magnitude;
    int32_t sub_bucket_count;
    int32_t sub_bucket_half_count;
    int32_t bucket_count;
    int32_t counts_len;
    _Atomic int64_t total_count;
    _Atomic int64_t saturated_count;
    _Atomic int64_t min_value; /* INT64_MAX when empty */
    _Atomic int64_t max_value; /* 0 when empty */
    _Atomic int64_t counts[];
};

void lw_hdr__clear(lw_hdr *h);

static inline int64_t lw_hdr__load(const _Atomic int64_t *p) {
    return atomic_load_explicit((_Atomic int64_t *)p, memory_order_relaxed);
}

/* Bucket math, inline: recording computes an index per value, and a call
 * (through the PLT, from a shared object) would cost as much as the math. */
static inline int lw_hdr__clz64(uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_clzll(x);
#else
    int n = 0;
    if (x == 0) return 64;
    while (!(x & 0x8000000000000000ULL)) { x <<= 1; n++; }
    return n;
#endif
}

static inline int32_t lw_hdr__bucket_index_of(const lw_hdr *h, int64_t value) {
    int32_t pow2ceiling = 64 - lw_hdr__clz64((uint64_t)value | (uint64_t)h->sub_bucket_mask);
    return pow2ceiling - h->unit_magnitude - (h->sub_bucket_half_count_magnitude + 1);
}

static inline int32_t lw_hdr__sub_bucket_index_of(const lw_hdr *h, int64_t value, int32_t bucket) {
    return (int32_t)(value >> (bucket + h->unit_magnitude));
}

static inline int32_t lw_hdr__counts_index(const lw_hdr *h, int64_t value) {
    int32_t bucket = lw_hdr__bucket_index_of(h, value);
    int32_t sub_bucket = lw_hdr__sub_bucket_index_of(h, value, bucket);
    return ((bucket + 1) << h->sub_bucket_half_count_magnitude) + (sub_bucket - h->sub_bucket_half_count);
}

#endif
