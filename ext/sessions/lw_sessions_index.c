/* The session table's hash index: see lw_sessions_internal.h. */
#include <errno.h>

#include "lw_mem.h"
#include "lw_sessions_internal.h"

#define INITIAL_BITS 6
/* Fibonacci hashing spreads ids whose hashes are sequential (ints hash to
 * themselves) over the whole table. */
#define MIX 0x9E3779B1u
#define TAG_BITS 63u

static inline uint32_t home_of(uint32_t hash, uint32_t bits)
{
    return (hash * MIX) >> (32 - bits);
}

static inline uint32_t tag_of(uint32_t hash)
{
    return ((hash * MIX) & TAG_BITS) << LW_INDEX_TAG_SHIFT;
}

static inline uint32_t entry_of(uint32_t hash, uint32_t index)
{
    return tag_of(hash) | (index + 1);
}

static size_t bytes_of(uint32_t bits) { return ((size_t)1 << bits) * sizeof(uint32_t); }

int lw_sessions_index_init(lw_sessions_index *ix)
{
    ix->bits = INITIAL_BITS;
    ix->used = 0;
    ix->slots = lw_mem_alloc(bytes_of(ix->bits));
    return ix->slots ? 0 : ENOMEM;
}

void lw_sessions_index_free(lw_sessions_index *ix)
{
    lw_mem_free(ix->slots, bytes_of(ix->bits));
    ix->slots = NULL;
}

size_t lw_sessions_index_memory(const lw_sessions_index *ix) { return bytes_of(ix->bits); }

static void put(uint32_t *slots, uint32_t bits, uint32_t hash, uint32_t entry)
{
    uint32_t mask = ((uint32_t)1 << bits) - 1, pos = home_of(hash, bits);
    while (slots[pos])
        pos = (pos + 1) & mask;
    slots[pos] = entry;
}

int lw_sessions_index_reserve(lw_sessions *t)
{
    lw_sessions_index *ix = &t->index;
    uint32_t size = (uint32_t)1 << ix->bits, bits = ix->bits + 1, *grown;
    if ((uint64_t)(ix->used + 1) * 4 <= (uint64_t)size * 3)
        return 0;
    if (bits > 31)
        return ENOMEM;
    grown = lw_mem_alloc(bytes_of(bits));
    if (!grown)
        return ENOMEM;
    for (uint32_t i = 0; i < size; i++) {
        uint32_t e = ix->slots[i];
        if (e)
            put(grown, bits, t->recs[(e & LW_INDEX_REC_MASK) - 1].hash, e);
    }
    lw_mem_free(ix->slots, bytes_of(ix->bits));
    ix->slots = grown;
    ix->bits = bits;
    return 0;
}

int lw_sessions_index_find(lw_sessions *t, void *id, uint32_t hash, lw_sessions_eq eq, void *ctx,
                           uint32_t *index)
{
    const lw_sessions_index *ix = &t->index;
    uint32_t mask = ((uint32_t)1 << ix->bits) - 1, pos = home_of(hash, ix->bits);
    uint32_t tag = tag_of(hash), e;
    while ((e = ix->slots[pos]) != 0) {
        if ((e & ~LW_INDEX_REC_MASK) == tag) {
            uint32_t i = (e & LW_INDEX_REC_MASK) - 1;
            const lw_sess *r = &t->recs[i];
            if (r->hash == hash) {
                int same = r->id == id ? 1 : eq(r->id, id, i, ctx);
                if (same < 0)
                    return -1;
                if (same) {
                    *index = i;
                    return 1;
                }
            }
        }
        pos = (pos + 1) & mask;
    }
    return 0;
}

void lw_sessions_index_add(lw_sessions *t, uint32_t index)
{
    uint32_t hash = t->recs[index].hash;
    put(t->index.slots, t->index.bits, hash, entry_of(hash, index));
    t->index.used++;
}

void lw_sessions_index_delete(lw_sessions *t, uint32_t index)
{
    lw_sessions_index *ix = &t->index;
    uint32_t bits = ix->bits, mask = ((uint32_t)1 << bits) - 1;
    uint32_t i = home_of(t->recs[index].hash, bits), j;
    while ((ix->slots[i] & LW_INDEX_REC_MASK) != index + 1)
        i = (i + 1) & mask; /* present: found by its record, no id compared */
    /* Shift back every entry of the run after it that may move to the gap. */
    j = i;
    for (;;) {
        uint32_t e, home;
        j = (j + 1) & mask;
        e = ix->slots[j];
        if (!e)
            break;
        home = home_of(t->recs[(e & LW_INDEX_REC_MASK) - 1].hash, bits);
        /* e stays if its home lies cyclically in (i, j] */
        if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
            continue;
        ix->slots[i] = e;
        i = j;
    }
    ix->slots[i] = 0;
    ix->used--;
}
