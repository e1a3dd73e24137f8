/* lw_slots: the slots of a hierarchical timer wheel. See lw_slots.h. */
#include "lw_slots.h"

#include <math.h>
#include <string.h>

#define SLOT_MASK ((uint64_t)LW_SLOTS_PER_LEVEL - 1)

static unsigned ctz64(uint64_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return (unsigned)__builtin_ctzll(x);
#else
    unsigned n = 0;
    while (!(x & 1)) {
        x >>= 1;
        n++;
    }
    return n;
#endif
}

static unsigned highest_bit(uint64_t x) /* x != 0 */
{
#if defined(__GNUC__) || defined(__clang__)
    return 63u - (unsigned)__builtin_clzll(x);
#else
    unsigned n = 0;
    while (x >>= 1)
        n++;
    return n;
#endif
}

int lw_slots_init(lw_slots *s, double res, double start, size_t stride, size_t links_off)
{
    int levels;
    uint64_t max_ahead = 0;
    if (!(res >= 1e-6 && res <= 3600.0))
        return -1;
    if (!isfinite(start) || fabs(start / res) >= 4503599627370496.0 /* 2**52 */)
        return -1;
    for (levels = 2; levels <= LW_SLOTS_MAX_LEVELS; levels++) {
        uint64_t range = (uint64_t)1 << (LW_SLOTS_BITS * levels);
        uint64_t top_slot = range >> LW_SLOTS_BITS;
        max_ahead = range - top_slot - 1;
        if ((double)max_ahead * res >= LW_SLOTS_MIN_HORIZON_SECONDS)
            break;
    }
    if (levels > LW_SLOTS_MAX_LEVELS)
        return -1;
    memset(s, 0, sizeof(*s));
    s->res = res;
    s->origin = floor(start / res);
    s->max_ahead = max_ahead;
    s->levels = levels;
    s->stride = stride;
    s->links_off = links_off;
    lw_slots_clear(s);
    return 0;
}

void lw_slots_clear(lw_slots *s)
{
    for (size_t i = 0; i < sizeof(s->heads) / sizeof(s->heads[0]); i++)
        s->heads[i] = LW_SLOTS_NIL;
    memset(s->occupied, 0, sizeof(s->occupied));
}

double lw_slots_tick_of(const lw_slots *s, double t) { return floor(t / s->res) - s->origin; }

double lw_slots_horizon(const lw_slots *s) { return (double)s->max_ahead * s->res; }

int lw_slots_accepts(const lw_slots *s, double deadline)
{
    return isfinite(deadline) && lw_slots_tick_of(s, deadline) <= (double)s->cur + (double)s->max_ahead;
}

unsigned lw_slots_slot_for(const lw_slots *s, double deadline)
{
    double q = lw_slots_tick_of(s, deadline);
    uint64_t t;
    unsigned level, index;
    if (q <= (double)s->cur)
        return (unsigned)(s->cur & SLOT_MASK);
    t = (uint64_t)q;
    level = highest_bit((s->cur ^ t) | SLOT_MASK) / LW_SLOTS_BITS;
    if (level >= (unsigned)s->levels)
        level = (unsigned)s->levels - 1;
    index = (unsigned)((t >> (LW_SLOTS_BITS * level)) & SLOT_MASK);
    return level * LW_SLOTS_PER_LEVEL + index;
}

void lw_slots_link(lw_slots *s, uint32_t h, unsigned slot)
{
    lw_slot_links *n = lw_slots_links(s, h);
    uint32_t head = s->heads[slot];
    n->slot = (uint16_t)slot;
    n->prev = LW_SLOTS_NIL;
    n->next = head;
    if (head != LW_SLOTS_NIL)
        lw_slots_links(s, head)->prev = h;
    s->heads[slot] = h;
    s->occupied[slot >> LW_SLOTS_BITS] |= (uint64_t)1 << (slot & SLOT_MASK);
}

void lw_slots_unlink(lw_slots *s, uint32_t h)
{
    lw_slot_links *n = lw_slots_links(s, h);
    unsigned slot = n->slot;
    if (n->prev != LW_SLOTS_NIL)
        lw_slots_links(s, n->prev)->next = n->next;
    else
        s->heads[slot] = n->next;
    if (n->next != LW_SLOTS_NIL)
        lw_slots_links(s, n->next)->prev = n->prev;
    if (s->heads[slot] == LW_SLOTS_NIL)
        s->occupied[slot >> LW_SLOTS_BITS] &= ~((uint64_t)1 << (slot & SLOT_MASK));
    n->slot = LW_SLOTS_NONE;
}

void lw_slots_file(lw_slots *s, uint32_t h, double deadline)
{
    lw_slots_link(s, h, lw_slots_slot_for(s, deadline));
}

uint32_t lw_slots_take(lw_slots *s, unsigned slot)
{
    uint32_t h = s->heads[slot];
    s->heads[slot] = LW_SLOTS_NIL;
    s->occupied[slot >> LW_SLOTS_BITS] &= ~((uint64_t)1 << (slot & SLOT_MASK));
    return h;
}

int lw_slots_first(const lw_slots *s, unsigned *slot, uint64_t *start)
{
    uint64_t cur = s->cur;
    uint64_t bits = s->occupied[0] & (~(uint64_t)0 << (cur & SLOT_MASK));
    if (bits) {
        unsigned i = ctz64(bits);
        *slot = i;
        *start = (cur & ~SLOT_MASK) + i;
        return 1;
    }
    for (int level = 1; level < s->levels; level++) {
        uint64_t occ = s->occupied[level];
        unsigned shift, c, i;
        uint64_t block, after;
        if (!occ)
            continue;
        shift = (unsigned)(LW_SLOTS_BITS * level);
        c = (unsigned)((cur >> shift) & SLOT_MASK);
        block = (cur >> (shift + LW_SLOTS_BITS)) << (shift + LW_SLOTS_BITS);
        after = c == SLOT_MASK ? 0 : occ & (~(uint64_t)0 << (c + 1));
        if (after) {
            i = ctz64(after);
            *slot = (unsigned)level * LW_SLOTS_PER_LEVEL + i;
            *start = block + ((uint64_t)i << shift);
            return 1;
        }
        /* Only the top level wraps into the next cycle. */
        i = ctz64(occ);
        *slot = (unsigned)level * LW_SLOTS_PER_LEVEL + i;
        *start = block + ((uint64_t)1 << (shift + LW_SLOTS_BITS)) + ((uint64_t)i << shift);
        return 1;
    }
    return 0;
}

double lw_slots_tick_start_time(const lw_slots *s, uint64_t t)
{
    double target = (double)t;
    double v = (s->origin + target) * s->res;
    while (lw_slots_tick_of(s, v) < target)
        v = nextafter(v, INFINITY);
    for (;;) {
        double p = nextafter(v, -INFINITY);
        if (lw_slots_tick_of(s, p) < target)
            break;
        v = p;
    }
    return v;
}
