/* lw_hdr: HDR histogram layout, recording and queries. See lw_hdr.h. */
#define _DEFAULT_SOURCE /* lw_hdr_alloc.h: MAP_ANONYMOUS under -std=c11 (glibc) */

#include "lw_hdr_alloc.h"
#include "lw_hdr_internal.h"
#include "lw_hdr_record.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SIZEOF_INT128__
__extension__ typedef __int128 lw_wide;
#else
typedef long double lw_wide;
#endif

int64_t lw_hdr_value_at_index(const lw_hdr *h, int32_t index) {
    int32_t bucket = (index >> h->sub_bucket_half_count_magnitude) - 1;
    int32_t sub_bucket = (index & (h->sub_bucket_half_count - 1)) + h->sub_bucket_half_count;
    if (bucket < 0) {
        sub_bucket -= h->sub_bucket_half_count;
        bucket = 0;
    }
    return (int64_t)sub_bucket << (bucket + h->unit_magnitude);
}

static int64_t equivalent_range(const lw_hdr *h, int64_t value) {
    int32_t bucket = lw_hdr__bucket_index_of(h, value);
    int32_t sub_bucket = lw_hdr__sub_bucket_index_of(h, value, bucket);
    if (sub_bucket >= h->sub_bucket_count) bucket++;
    return (int64_t)1 << (h->unit_magnitude + bucket);
}

int64_t lw_hdr_lowest_equivalent(const lw_hdr *h, int64_t value) {
    int32_t bucket = lw_hdr__bucket_index_of(h, value);
    int32_t sub_bucket = lw_hdr__sub_bucket_index_of(h, value, bucket);
    return (int64_t)sub_bucket << (bucket + h->unit_magnitude);
}

int64_t lw_hdr_highest_equivalent(const lw_hdr *h, int64_t value) {
    /* Computed in unsigned arithmetic: the last bucket of a histogram whose
     * highest_trackable is near INT64_MAX ends at INT64_MAX exactly. */
    uint64_t next = (uint64_t)lw_hdr_lowest_equivalent(h, value) + (uint64_t)equivalent_range(h, value);
    return (int64_t)(next - 1);
}

int64_t lw_hdr_median_equivalent(const lw_hdr *h, int64_t value) {
    return lw_hdr_lowest_equivalent(h, value) + (equivalent_range(h, value) >> 1);
}

/* Bytes of a histogram with counts_len counts: the struct ends in them. */
static size_t alloc_size(int32_t counts_len) {
    return sizeof(lw_hdr) + (size_t)counts_len * sizeof(_Atomic int64_t);
}

static int32_t buckets_needed(int64_t value, int32_t sub_bucket_count, int32_t unit_magnitude) {
    int64_t smallest_untrackable = (int64_t)sub_bucket_count << unit_magnitude;
    int32_t needed = 1;
    while (smallest_untrackable <= value) {
        if (smallest_untrackable > INT64_MAX / 2) return needed + 1;
        smallest_untrackable <<= 1;
        needed++;
    }
    return needed;
}

lw_hdr_status lw_hdr_new(int64_t lowest, int64_t highest, int significant_figures, lw_hdr **out) {
    *out = NULL;
    if (lowest < 1 || significant_figures < 1 || significant_figures > 5 ||
        lowest > INT64_MAX / 2 || highest < 2 * lowest)
        return LW_HDR_EINVAL;
    /* The same floating-point formulas as HdrHistogram_c and the Python
     * package: the layout must match theirs bit for bit, even where the
     * float math differs from exact integer log2. */
    int32_t unit_magnitude = (int32_t)floor(log((double)lowest) / log(2.0));
    double largest_single_unit = 2.0 * pow(10.0, significant_figures);
    int32_t sub_bucket_count_magnitude = (int32_t)ceil(log(largest_single_unit) / log(2.0));
    int32_t half_magnitude = sub_bucket_count_magnitude > 1 ? sub_bucket_count_magnitude - 1 : 0;
    if (unit_magnitude + half_magnitude > 61) return LW_HDR_EINVAL;
    int32_t sub_bucket_count = (int32_t)1 << (half_magnitude + 1);
    int32_t bucket_count = buckets_needed(highest, sub_bucket_count, unit_magnitude);
    int64_t counts_len = (int64_t)(bucket_count + 1) * (sub_bucket_count / 2);
    if (counts_len > INT32_MAX / 16) return LW_HDR_EINVAL;

    lw_hdr *h = lw_hdr__alloc_zeroed(alloc_size((int32_t)counts_len));
    if (!h) return LW_HDR_ENOMEM;
    h->lowest_trackable = lowest;
    h->highest_trackable = highest;
    h->significant_figures = significant_figures;
    h->unit_magnitude = unit_magnitude;
    h->sub_bucket_half_count_magnitude = half_magnitude;
    h->sub_bucket_count = sub_bucket_count;
    h->sub_bucket_half_count = sub_bucket_count / 2;
    h->sub_bucket_mask = ((int64_t)sub_bucket_count - 1) << unit_magnitude;
    h->bucket_count = bucket_count;
    h->counts_len = (int32_t)counts_len;
    h->highest_recordable = lw_hdr_highest_equivalent(h, lw_hdr_value_at_index(h, h->counts_len - 1));
    /* The memory is zeroed: every counter but the minimum is already empty,
     * and the counts' pages stay untouched until something is recorded. */
    atomic_store_explicit(&h->min_value, INT64_MAX, memory_order_relaxed);
    *out = h;
    return LW_HDR_OK;
}

void lw_hdr_free(lw_hdr *h) {
    if (h) lw_hdr__alloc_free(h, alloc_size(h->counts_len));
}

lw_hdr *lw_hdr_copy(const lw_hdr *h) {
    lw_hdr *c = lw_hdr__alloc_zeroed(alloc_size(h->counts_len));
    if (!c) return NULL;
    /* Field-wise atomic loads would be no more consistent against concurrent
     * recorders; the header documents that copy is not a snapshot. */
    memcpy((void *)c, (const void *)h, sizeof(lw_hdr));
    /* Only the non-zero counts are written, so the copy, like the original,
     * takes memory only for the buckets in use. */
    for (int32_t i = 0; i < h->counts_len; i++) {
        int64_t count = lw_hdr__load(&h->counts[i]);
        if (count) atomic_store_explicit(&c->counts[i], count, memory_order_relaxed);
    }
    return c;
}

int64_t lw_hdr_lowest_trackable(const lw_hdr *h) { return h->lowest_trackable; }
int64_t lw_hdr_highest_trackable(const lw_hdr *h) { return h->highest_trackable; }
int64_t lw_hdr_highest_recordable(const lw_hdr *h) { return h->highest_recordable; }
int lw_hdr_significant_figures(const lw_hdr *h) { return h->significant_figures; }
int32_t lw_hdr_counts_len(const lw_hdr *h) { return h->counts_len; }

int lw_hdr_same_layout(const lw_hdr *a, const lw_hdr *b) {
    return a->lowest_trackable == b->lowest_trackable &&
           a->highest_trackable == b->highest_trackable &&
           a->significant_figures == b->significant_figures;
}

void lw_hdr__clear(lw_hdr *h) {
    /* Stores only where a count is: reading a page never written maps the
     * shared zero page, so empty buckets keep costing no memory. */
    for (int32_t i = 0; i < h->counts_len; i++)
        if (lw_hdr__load(&h->counts[i]))
            atomic_store_explicit(&h->counts[i], 0, memory_order_relaxed);
    atomic_store_explicit(&h->total_count, 0, memory_order_relaxed);
    atomic_store_explicit(&h->saturated_count, 0, memory_order_relaxed);
    atomic_store_explicit(&h->min_value, INT64_MAX, memory_order_relaxed);
    atomic_store_explicit(&h->max_value, 0, memory_order_relaxed);
}

void lw_hdr_reset(lw_hdr *h) { lw_hdr__clear(h); }

int lw_hdr_record(lw_hdr *h, int64_t value, int64_t count) {
    return lw_hdr_record_inline(h, value, count, 0);
}

int lw_hdr_record_single_writer(lw_hdr *h, int64_t value, int64_t count) {
    return lw_hdr_record_inline(h, value, count, 1);
}

void lw_hdr_record_corrected(lw_hdr *h, int64_t value, int64_t expected_interval, int64_t count) {
    lw_hdr_record(h, value, count);
    if (expected_interval <= 0 || value <= expected_interval) return;
    /* The missing samples value - k * interval, k = 1..missing, are recorded
     * a bucket at a time: the work is bounded by the bucket count, not by
     * value / interval, which a caller may make arbitrarily large. */
    int64_t missing = value / expected_interval - 1;
    int64_t k = 1;
    while (k <= missing) {
        int64_t term = value - k * expected_interval;
        int64_t last;
        if (term > h->highest_recordable)
            last = (value - h->highest_recordable - 1) / expected_interval;
        else
            last = (value - lw_hdr_lowest_equivalent(h, term)) / expected_interval;
        if (last > missing) last = missing;
        lw_hdr_record(h, term, (last - k + 1) * count);
        k = last + 1;
    }
}

int64_t lw_hdr_total_count(const lw_hdr *h) { return lw_hdr__load(&h->total_count); }
int64_t lw_hdr_saturated_count(const lw_hdr *h) { return lw_hdr__load(&h->saturated_count); }

int64_t lw_hdr_min(const lw_hdr *h) {
    if (lw_hdr__load(&h->total_count) == 0 || lw_hdr__load(&h->counts[0]) > 0) return 0;
    return lw_hdr_lowest_equivalent(h, lw_hdr__load(&h->min_value));
}

int64_t lw_hdr_max(const lw_hdr *h) {
    int64_t max = lw_hdr__load(&h->max_value);
    return max == 0 ? 0 : lw_hdr_highest_equivalent(h, max);
}

int64_t lw_hdr_count_at_index(const lw_hdr *h, int32_t index) {
    return lw_hdr__load(&h->counts[index]);
}

int64_t lw_hdr_count_at_value(const lw_hdr *h, int64_t value) {
    return lw_hdr__load(&h->counts[lw_hdr__counts_index(h, value)]);
}

int32_t lw_hdr_next_recorded(const lw_hdr *h, int32_t from) {
    for (int32_t i = from < 0 ? 0 : from; i < h->counts_len; i++)
        if (lw_hdr__load(&h->counts[i]) != 0) return i;
    return -1;
}

/* The bucket of the largest recorded value bounds every scan: nothing above
 * it is non-zero. */
static int32_t last_index(const lw_hdr *h) {
    return lw_hdr__counts_index(h, lw_hdr__load(&h->max_value));
}

double lw_hdr_mean(const lw_hdr *h) {
    int64_t total = lw_hdr__load(&h->total_count);
    if (total == 0) return 0.0;
    int32_t last = last_index(h);
    /* The sum is exact, as in the Python package's arbitrary-precision ints,
     * so that the one rounding is the final division. */
    lw_wide sum = 0;
    for (int32_t i = 0; i <= last; i++) {
        int64_t c = lw_hdr__load(&h->counts[i]);
        if (c) sum += c * (lw_wide)lw_hdr_median_equivalent(h, lw_hdr_value_at_index(h, i));
    }
    return (double)sum / (double)total;
}

double lw_hdr_stdev(const lw_hdr *h) {
    int64_t total = lw_hdr__load(&h->total_count);
    if (total == 0) return 0.0;
    double mean = lw_hdr_mean(h);
    double acc = 0.0;
    int32_t last = last_index(h);
    for (int32_t i = 0; i <= last; i++) {
        int64_t c = lw_hdr__load(&h->counts[i]);
        if (c) {
            double dev = (double)lw_hdr_median_equivalent(h, lw_hdr_value_at_index(h, i)) - mean;
            acc += (dev * dev) * (double)c;
        }
    }
    return sqrt(acc / (double)total);
}

int64_t lw_hdr_value_at_percentile(const lw_hdr *h, double percentile) {
    int64_t total = lw_hdr__load(&h->total_count);
    if (total == 0) return 0;
    double requested = percentile < 100.0 ? percentile : 100.0;
    int64_t target = (int64_t)(requested * (double)total / 100.0 + 0.5);
    if (target < 1) target = 1;
    int32_t last = last_index(h);
    int32_t found = -1;
    if (target > total / 2) {
        /* High percentiles: walk down from the top, past the fewest buckets.
         * Stops at the first index (ascending) whose cumulative count
         * reaches target, the same answer as the upward scan. */
        int64_t cumulative = total;
        int32_t i = last;
        while (i > 0) {
            int64_t below = cumulative - lw_hdr__load(&h->counts[i]);
            if (below < target) break;
            cumulative = below;
            i--;
        }
        found = i;
    } else {
        int64_t cumulative = 0;
        for (int32_t i = 0; i <= last; i++) {
            cumulative += lw_hdr__load(&h->counts[i]);
            if (cumulative >= target) { found = i; break; }
        }
        if (found < 0) found = last; /* only under concurrent recording */
    }
    int64_t value = lw_hdr_value_at_index(h, found);
    return percentile != 0.0 ? lw_hdr_highest_equivalent(h, value) : lw_hdr_lowest_equivalent(h, value);
}

lw_hdr_status lw_hdr_add(lw_hdr *dst, const lw_hdr *src) {
    int64_t src_total = lw_hdr__load(&src->total_count);
    if (src_total > INT64_MAX - lw_hdr__load(&dst->total_count)) return LW_HDR_EOVERFLOW;
    if (lw_hdr_same_layout(dst, src)) {
        for (int32_t i = 0; i < src->counts_len; i++) {
            int64_t c = lw_hdr__load(&src->counts[i]);
            if (c) atomic_fetch_add_explicit(&dst->counts[i], c, memory_order_relaxed);
        }
        if (src_total) {
            atomic_fetch_add_explicit(&dst->total_count, src_total, memory_order_relaxed);
            lw_hdr__update_min_max(dst, lw_hdr__load(&src->min_value));
            lw_hdr__update_min_max(dst, lw_hdr__load(&src->max_value));
        }
    } else {
        for (int32_t i = lw_hdr_next_recorded(src, 0); i >= 0; i = lw_hdr_next_recorded(src, i + 1))
            lw_hdr_record(dst, lw_hdr_value_at_index(src, i), lw_hdr__load(&src->counts[i]));
    }
    atomic_fetch_add_explicit(&dst->saturated_count, lw_hdr__load(&src->saturated_count),
                              memory_order_relaxed);
    return LW_HDR_OK;
}
