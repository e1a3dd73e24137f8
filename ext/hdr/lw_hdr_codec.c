/* lw_hdr_codec: the counts payload of HdrHistogram's V2 encoding.
 *
 * Each count is a ZigZag LEB128 varint of at most 9 bytes (the ninth byte
 * carries 8 bits); a run of n empty buckets is written as -n, as
 * HdrHistogram_c does (Java writes a lone zero as 0; both decode either). The header,
 * zlib and base64 framing around it is done by the caller. */
#include "lw_hdr_internal.h"

static size_t put_zigzag(uint8_t *p, int64_t signed_value) {
    uint64_t v = ((uint64_t)signed_value << 1) ^ (uint64_t)(signed_value >> 63);
    size_t n = 0;
    while (n < 8) {
        if (v < 0x80) {
            p[n++] = (uint8_t)v;
            return n;
        }
        p[n++] = (uint8_t)((v & 0x7f) | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v; /* ninth byte: the remaining 8 bits, no continuation */
    return n;
}

/* Returns bytes consumed, or 0 when the buffer ends mid-varint. */
static size_t get_zigzag(const uint8_t *p, size_t len, int64_t *out) {
    uint64_t v = 0;
    size_t n = 0;
    for (;;) {
        if (n >= len) return 0;
        uint8_t b = p[n];
        if (n == 8) {
            v |= (uint64_t)b << 56;
            n++;
            break;
        }
        v |= (uint64_t)(b & 0x7f) << (7 * n);
        n++;
        if (!(b & 0x80)) break;
    }
    *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
    return n;
}

static int32_t encoded_len(const lw_hdr *h) {
    if (lw_hdr__load(&h->total_count) == 0) return 0;
    return lw_hdr__counts_index(h, lw_hdr__load(&h->max_value)) + 1;
}

size_t lw_hdr_encode_bound(const lw_hdr *h) { return (size_t)encoded_len(h) * 9; }

size_t lw_hdr_encode_counts(const lw_hdr *h, uint8_t *buf, size_t cap) {
    int32_t limit = encoded_len(h);
    size_t pos = 0;
    if (cap < (size_t)limit * 9) return 0;
    for (int32_t i = 0; i < limit;) {
        int64_t c = lw_hdr__load(&h->counts[i++]);
        if (c == 0) {
            int64_t zeros = 1;
            while (i < limit && lw_hdr__load(&h->counts[i]) == 0) {
                zeros++;
                i++;
            }
            pos += put_zigzag(buf + pos, -zeros);
        } else {
            pos += put_zigzag(buf + pos, c);
        }
    }
    return pos;
}

lw_hdr_status lw_hdr_decode_counts(lw_hdr *h, const uint8_t *buf, size_t len) {
    int64_t index = 0, total = 0;
    int32_t min_index = -1, max_index = -1;
    /* Every index of the counts array is a real bucket, including those past
     * highest_trackable's (Java and the Python package record values up to
     * the end of the array): their counts are kept where they are, so that
     * encoding the result gives back the same counts. */
    size_t pos = 0;
    lw_hdr_status status = LW_HDR_OK;
    lw_hdr__clear(h);
    while (pos < len) {
        int64_t v;
        size_t n = get_zigzag(buf + pos, len - pos, &v);
        if (n == 0) { status = LW_HDR_ECORRUPT; break; }
        pos += n;
        if (v < 0) {
            /* -INT64_MIN is not representable: reject it before negating. */
            if (v == INT64_MIN || -v > h->counts_len - index) { status = LW_HDR_ECORRUPT; break; }
            index += -v;
            continue;
        }
        if (index >= h->counts_len) { status = LW_HDR_ECORRUPT; break; }
        if (v > 0) {
            if (v > INT64_MAX - total) { status = LW_HDR_EOVERFLOW; break; }
            total += v;
            int32_t at = (int32_t)index;
            atomic_fetch_add_explicit(&h->counts[at], v, memory_order_relaxed);
            if (min_index < 0) min_index = at;
            max_index = at;
        }
        index++;
    }
    if (status != LW_HDR_OK) {
        lw_hdr__clear(h);
        return status;
    }
    if (total) {
        atomic_store_explicit(&h->total_count, total, memory_order_relaxed);
        atomic_store_explicit(&h->min_value, lw_hdr_value_at_index(h, min_index), memory_order_relaxed);
        /* The bucket's top, as HdrHistogram_py and HdrHistogram_c do when
         * decoding: an encoding cannot tell which value of the bucket it was. */
        atomic_store_explicit(&h->max_value, lw_hdr_highest_equivalent(h, lw_hdr_value_at_index(h, max_index)),
                              memory_order_relaxed);
    }
    return LW_HDR_OK;
}

lw_hdr_status lw_hdr_set_saturated(lw_hdr *h, int64_t saturated) {
    if (saturated < 0 || saturated > lw_hdr__load(&h->total_count)) return LW_HDR_EINVAL;
    atomic_store_explicit(&h->saturated_count, saturated, memory_order_relaxed);
    return LW_HDR_OK;
}
