/* The stuck sessions' bookkeeping: a dense array (the status thread and
 * stuck() walk it) and a map from a record's index to its entry (a
 * heartbeat of a stuck session finds it in O(1)). Stuck sessions are few
 * when all is well, and this costs nothing per session otherwise. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lw_sessions_internal.h"

#define MIX 0x9E3779B1u
#define MIN_MAP_BITS 4

static inline uint32_t home_of(uint32_t index, uint32_t bits) { return (index * MIX) >> (32 - bits); }

void lw_sessions_stuck_init(lw_sessions_stuck_set *s) { memset(s, 0, sizeof(*s)); }

void lw_sessions_stuck_free(lw_sessions_stuck_set *s)
{
    for (size_t i = 0; i < s->len; i++)
        free(s->items[i].text);
    free(s->items);
    free(s->map);
    memset(s, 0, sizeof(*s));
}

size_t lw_sessions_stuck_memory(const lw_sessions_stuck_set *s)
{
    size_t bytes = s->cap * sizeof(lw_sessions_stuck) + (s->map ? ((size_t)1 << s->map_bits) * 4 : 0);
    for (size_t i = 0; i < s->len; i++)
        bytes += s->items[i].text_len;
    return bytes;
}

static uint32_t map_mask(const lw_sessions_stuck_set *s) { return ((uint32_t)1 << s->map_bits) - 1; }

/* The map slot holding `index`'s entry (present). */
static uint32_t map_slot(const lw_sessions_stuck_set *s, uint32_t index)
{
    uint32_t mask = map_mask(s), pos = home_of(index, s->map_bits);
    while (s->items[s->map[pos] - 1].index != index)
        pos = (pos + 1) & mask;
    return pos;
}

static void map_put(uint32_t *map, uint32_t bits, uint32_t index, uint32_t position)
{
    uint32_t mask = ((uint32_t)1 << bits) - 1, pos = home_of(index, bits);
    while (map[pos])
        pos = (pos + 1) & mask;
    map[pos] = position + 1;
}

int lw_sessions_stuck_reserve(lw_sessions_stuck_set *s, size_t n)
{
    size_t want = s->len + n;
    if (want > LW_SESSIONS_MAX)
        return ENOMEM;
    if (want > s->cap) {
        size_t cap = s->cap < 16 ? 16 : s->cap;
        lw_sessions_stuck *grown;
        while (cap < want)
            cap *= 2;
        grown = realloc(s->items, cap * sizeof(*grown));
        if (!grown)
            return ENOMEM;
        s->items = grown;
        s->cap = cap;
    }
    /* The map stays at most half full. */
    if (!s->map || (uint64_t)want * 2 > ((uint64_t)1 << s->map_bits)) {
        uint32_t bits = s->map ? s->map_bits : MIN_MAP_BITS, *map;
        while ((uint64_t)want * 2 > ((uint64_t)1 << bits))
            bits++;
        map = calloc((size_t)1 << bits, sizeof(uint32_t));
        if (!map)
            return ENOMEM;
        for (size_t i = 0; i < s->len; i++)
            map_put(map, bits, s->items[i].index, (uint32_t)i);
        free(s->map);
        s->map = map;
        s->map_bits = bits;
    }
    return 0;
}

lw_sessions_stuck *lw_sessions_stuck_of(const lw_sessions_stuck_set *s, uint32_t index)
{
    uint32_t mask, pos, e;
    if (!s->map)
        return NULL;
    mask = map_mask(s);
    pos = home_of(index, s->map_bits);
    while ((e = s->map[pos]) != 0) {
        if (s->items[e - 1].index == index)
            return &s->items[e - 1];
        pos = (pos + 1) & mask;
    }
    return NULL;
}

lw_sessions_stuck *lw_sessions_stuck_add(lw_sessions_stuck_set *s, uint32_t index)
{
    lw_sessions_stuck *e = &s->items[s->len];
    memset(e, 0, sizeof(*e));
    e->index = index;
    map_put(s->map, s->map_bits, index, (uint32_t)s->len);
    s->len++;
    return e;
}

void lw_sessions_stuck_delete(lw_sessions_stuck_set *s, uint32_t index)
{
    uint32_t mask = map_mask(s), i = map_slot(s, index), j;
    uint32_t position = s->map[i] - 1, last = (uint32_t)s->len - 1;
    free(s->items[position].text);
    /* The map: shift back the entries of the run after the gap. */
    j = i;
    for (;;) {
        uint32_t e, home;
        j = (j + 1) & mask;
        e = s->map[j];
        if (!e)
            break;
        home = home_of(s->items[e - 1].index, s->map_bits);
        if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
            continue;
        s->map[i] = e;
        i = j;
    }
    s->map[i] = 0;
    /* The array: the last entry fills the hole. */
    if (position != last) {
        s->items[position] = s->items[last];
        s->map[map_slot(s, s->items[position].index)] = position + 1;
    }
    s->len--;
}
