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

int32_t lw_hdr__counts_index_for(const lw_hdr *h, int64_t value);
void lw_hdr__clear(lw_hdr *h);

static inline int64_t lw_hdr__load(const _Atomic int64_t *p) {
    return atomic_load_explicit((_Atomic int64_t *)p, memory_order_relaxed);
}

#endif
