# Declarations of ext/hdr/lw_hdr.h for the Cython bindings.
from libc.stdint cimport int32_t, int64_t, uint8_t

cdef extern from "lw_hdr.h" nogil:
    ctypedef struct lw_hdr:
        pass
    ctypedef enum lw_hdr_status:
        LW_HDR_OK
        LW_HDR_EINVAL
        LW_HDR_ENOMEM
        LW_HDR_ECORRUPT
        LW_HDR_EOVERFLOW

    lw_hdr_status lw_hdr_new(int64_t lowest, int64_t highest, int figures, lw_hdr **out)
    void lw_hdr_free(lw_hdr *h)
    lw_hdr *lw_hdr_copy(const lw_hdr *h)
    int64_t lw_hdr_lowest_trackable(const lw_hdr *h)
    int64_t lw_hdr_highest_trackable(const lw_hdr *h)
    int64_t lw_hdr_highest_recordable(const lw_hdr *h)
    int lw_hdr_significant_figures(const lw_hdr *h)
    int32_t lw_hdr_counts_len(const lw_hdr *h)
    int lw_hdr_same_layout(const lw_hdr *a, const lw_hdr *b)
    int lw_hdr_record(lw_hdr *h, int64_t value, int64_t count)
    void lw_hdr_record_corrected(lw_hdr *h, int64_t value, int64_t interval, int64_t count)
    int64_t lw_hdr_total_count(const lw_hdr *h)
    int64_t lw_hdr_saturated_count(const lw_hdr *h)
    int64_t lw_hdr_min(const lw_hdr *h)
    int64_t lw_hdr_max(const lw_hdr *h)
    double lw_hdr_mean(const lw_hdr *h)
    double lw_hdr_stdev(const lw_hdr *h)
    int64_t lw_hdr_value_at_percentile(const lw_hdr *h, double percentile)
    int64_t lw_hdr_count_at_value(const lw_hdr *h, int64_t value)
    int64_t lw_hdr_highest_equivalent(const lw_hdr *h, int64_t value)
    int32_t lw_hdr_next_recorded(const lw_hdr *h, int32_t start)
    int64_t lw_hdr_count_at_index(const lw_hdr *h, int32_t index)
    int64_t lw_hdr_value_at_index(const lw_hdr *h, int32_t index)
    lw_hdr_status lw_hdr_add(lw_hdr *dst, const lw_hdr *src)
    void lw_hdr_reset(lw_hdr *h)
    size_t lw_hdr_encode_bound(const lw_hdr *h)
    size_t lw_hdr_encode_counts(const lw_hdr *h, uint8_t *buf, size_t cap)
    lw_hdr_status lw_hdr_decode_counts(lw_hdr *h, const uint8_t *buf, size_t length)
    lw_hdr_status lw_hdr_set_saturated(lw_hdr *h, int64_t saturated)
