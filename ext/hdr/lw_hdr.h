/*
 * lw_hdr: an HDR histogram (the HdrHistogram algorithm) with lock-free
 * recording.
 *
 * Bucket layout, percentile and equivalence math follow HdrHistogram_c and
 * the `hdrhistogram` Python package exactly, so that every query answers the
 * same for the same data and so that encoded histograms move between the
 * implementations.
 *
 * Concurrency guarantee
 * ---------------------
 * lw_hdr_record() and lw_hdr_record_corrected() are lock-free and may be
 * called from any number of threads, none of which needs the Python GIL,
 * while other threads run the read-only queries on the same histogram.
 * Every counter is a 64-bit atomic updated with relaxed ordering: no update
 * is ever lost, but a reader that runs concurrently with recorders sees each
 * counter at some moment of its own, so totals, percentiles and the mean may
 * mix values recorded a few nanoseconds apart. A reader that needs one
 * consistent interval swaps histograms instead (HdrHistogram's Recorder
 * pattern) and reads the one nobody records into.
 * lw_hdr_reset(), lw_hdr_add() and lw_hdr_decode_counts() write non-atomically
 * across the whole array: callers must not run them concurrently with
 * recorders of the same histogram.
 *
 * The single-writer rule
 * ----------------------
 * lw_hdr_record_single_writer() updates each counter with a relaxed load and
 * a relaxed store instead of a locked read-modify-write (on x86 each locked
 * add is a full barrier of about 20 cycles). Readers may still run on other
 * threads at any time (every value they load is whole), but at most one
 * thread may write the histogram at a time, by any function: a second
 * writer's update can be lost. Hand-overs from one writer to the next must
 * be ordered (the GIL, a mutex, or a release/acquire pair such as the loop
 * monitor's interval swap). Who writes what in loopwatch:
 *   - Histogram.record() (the binding): threads holding the GIL, one at a
 *     time, so it records with lw_hdr_record_single_writer() (with
 *     lw_hdr_record() on a free-threaded Python, where nothing serializes
 *     them). Nothing hands user code a histogram that native code records
 *     into without the GIL.
 *   - The loop monitor's lag histograms: the sampler thread alone records,
 *     Python merges and resets a histogram only after lw_loop_swap_lag()
 *     handed it over; its delay histograms: the loop thread and the
 *     snapshot, both under the GIL. Both qualify, but record with
 *     lw_hdr_record(): about a hundred samples a second, where a locked add
 *     costs nothing measurable.
 *   - Several threads at once (tests/c/lw_hdr_stress.c): lw_hdr_record().
 * Where unsure, use lw_hdr_record(): it is always correct.
 */
#ifndef LW_HDR_H
#define LW_HDR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lw_hdr lw_hdr;

typedef enum lw_hdr_status {
    LW_HDR_OK = 0,
    LW_HDR_EINVAL = 1,    /* configuration outside what the layout supports */
    LW_HDR_ENOMEM = 2,    /* allocation failed */
    LW_HDR_ECORRUPT = 3,  /* encoded counts are malformed or do not fit */
    LW_HDR_EOVERFLOW = 4  /* a count or the total would exceed INT64_MAX */
} lw_hdr_status;

/* Allocate a zeroed histogram. lowest >= 1, highest >= 2 * lowest,
 * 1 <= significant_figures <= 5. */
lw_hdr_status lw_hdr_new(int64_t lowest, int64_t highest, int significant_figures,
                         lw_hdr **out);
void lw_hdr_free(lw_hdr *h);
/* A deep copy (not atomic with respect to concurrent recorders). */
lw_hdr *lw_hdr_copy(const lw_hdr *h);

int64_t lw_hdr_lowest_trackable(const lw_hdr *h);
int64_t lw_hdr_highest_trackable(const lw_hdr *h);
/* The top of the last bucket of the counts array: >= highest_trackable
 * (up to about twice it), never above INT64_MAX. Values up to it are
 * recorded exactly, as HdrHistogram (Java) and the Python package do. */
int64_t lw_hdr_highest_recordable(const lw_hdr *h);
int lw_hdr_significant_figures(const lw_hdr *h);
int32_t lw_hdr_counts_len(const lw_hdr *h);
int lw_hdr_same_layout(const lw_hdr *a, const lw_hdr *b);

/* Record `count` occurrences of `value` (value >= 0, count >= 0). A value
 * above highest_recordable (past the end of the counts array) is recorded as
 * highest_recordable and added to the saturated count. Returns 1 when the
 * value saturated, else 0. */
int lw_hdr_record(lw_hdr *h, int64_t value, int64_t count);
/* lw_hdr_record() for a histogram that one thread at a time writes (see
 * "The single-writer rule" above): the same result, no atomic
 * read-modify-write. */
int lw_hdr_record_single_writer(lw_hdr *h, int64_t value, int64_t count);
/* HdrHistogram's coordinated-omission correction (as in HdrHistogram_c and
 * Java): also records value - k * expected_interval for every k >= 1 while
 * that stays >= the interval. expected_interval <= 0 disables it. The caller
 * ensures count * (value / expected_interval) cannot overflow the total. */
void lw_hdr_record_corrected(lw_hdr *h, int64_t value, int64_t expected_interval,
                             int64_t count);

int64_t lw_hdr_total_count(const lw_hdr *h);
int64_t lw_hdr_saturated_count(const lw_hdr *h);
/* Lowest equivalent value of the smallest recorded value; 0 when empty. */
int64_t lw_hdr_min(const lw_hdr *h);
/* Highest equivalent value of the largest recorded value; 0 when empty. */
int64_t lw_hdr_max(const lw_hdr *h);
double lw_hdr_mean(const lw_hdr *h);
double lw_hdr_stdev(const lw_hdr *h);
/* percentile in [0, 100]; 0 when empty. */
int64_t lw_hdr_value_at_percentile(const lw_hdr *h, double percentile);
/* value in [0, highest_recordable]. */
int64_t lw_hdr_count_at_value(const lw_hdr *h, int64_t value);

int64_t lw_hdr_lowest_equivalent(const lw_hdr *h, int64_t value);
int64_t lw_hdr_highest_equivalent(const lw_hdr *h, int64_t value);
int64_t lw_hdr_median_equivalent(const lw_hdr *h, int64_t value);

/* Iteration over non-empty buckets: the first index >= from with a non-zero
 * count, or -1. */
int32_t lw_hdr_next_recorded(const lw_hdr *h, int32_t from);
int64_t lw_hdr_count_at_index(const lw_hdr *h, int32_t index);
int64_t lw_hdr_value_at_index(const lw_hdr *h, int32_t index);

/* dst += src. Same layout: counts are added. Other layouts: each of src's
 * buckets is recorded at its lowest equivalent value (saturating if dst's
 * range is smaller). Fails with LW_HDR_EOVERFLOW, leaving dst unchanged,
 * if the total would exceed INT64_MAX. */
lw_hdr_status lw_hdr_add(lw_hdr *dst, const lw_hdr *src);
void lw_hdr_reset(lw_hdr *h);

/* The V2 counts payload (ZigZag LEB128, runs of zeros as negative
 * lengths), up to the bucket of the largest recorded value. */
size_t lw_hdr_encode_bound(const lw_hdr *h);
size_t lw_hdr_encode_counts(const lw_hdr *h, uint8_t *buf, size_t cap);
/* Decode a V2 counts payload into an empty histogram of the declared
 * layout. Every count of the array is kept at its own bucket, past
 * highest_trackable too (nothing saturates). On error the histogram is left
 * empty. */
lw_hdr_status lw_hdr_decode_counts(lw_hdr *h, const uint8_t *buf, size_t len);
/* Set the saturated count of a histogram just decoded (restoring a copy
 * whose encoding could not carry it): LW_HDR_EINVAL unless
 * 0 <= saturated <= total count. */
lw_hdr_status lw_hdr_set_saturated(lw_hdr *h, int64_t saturated);

#ifdef __cplusplus
}
#endif

#endif
