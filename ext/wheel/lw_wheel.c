/*
 * lw_wheel: hierarchical timer wheel. See lw_wheel.h for the contract.
 *
 * Invariants (cur is the wheel's cursor tick, relative to `origin`):
 *  - A node whose tick is <= cur ("overdue" or due this tick) sits in level 0
 *    slot cur & 63, the current slot.
 *  - Otherwise a node sits at the level of the highest bit in which its
 *    filing tick differs from cur (clamped to the top level), in the slot
 *    given by its tick's bits at that level. So at every level >= 1 only
 *    slots after cur's own index are occupied (the top level also wraps:
 *    slots before cur's index there belong to the next top-level cycle),
 *    and every level-0 slot precedes every level-1 slot, and so on.
 *  - Deadlines are at most max_ahead = 64**L - 64**(L-1) - 1 ticks after cur,
 *    which keeps a wrapped top-level slot from meeting cur's own.
 *  - Level-0 nodes are filed under their exact deadline tick; nodes at level
 *    >= 1 may be filed under an earlier tick than their deadline (lazy move).
 */
#include "lw_wheel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX
#define FREE_SLOT UINT16_MAX
#define DUE_SLOT (UINT16_MAX - 1)
#define SLOT_MASK ((uint64_t)LW_WHEEL_SLOTS - 1)

typedef struct node {
    double deadline;  /* exact, in seconds */
    uint64_t seq;     /* scheduling order, for ties */
    uint32_t next;    /* slot list, or free list */
    uint32_t prev;
    uint16_t slot;    /* level * 64 + index, FREE_SLOT or DUE_SLOT */
} node;

_Static_assert(sizeof(node) <= 48, "a wheel node must stay within 48 bytes");

struct lw_wheel {
    double res;
    double origin;        /* floor(start / res), an integer-valued double */
    double time;          /* latest `now` seen, or start */
    uint64_t cur;         /* cursor tick, relative to origin */
    uint64_t max_ahead;   /* in ticks */
    uint64_t seq;
    int levels;
    node *nodes;
    uint32_t cap, used, free_head;
    size_t len;
    lw_wheel_due *due;
    size_t due_cap;
    uint64_t occupied[LW_WHEEL_MAX_LEVELS];
    uint32_t heads[LW_WHEEL_MAX_LEVELS * LW_WHEEL_SLOTS];
};

/* -- bit helpers ------------------------------------------------------- */
static unsigned ctz64(uint64_t x) {
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

static unsigned highest_bit(uint64_t x) { /* x != 0 */
#if defined(__GNUC__) || defined(__clang__)
    return 63u - (unsigned)__builtin_clzll(x);
#else
    unsigned n = 0;
    while (x >>= 1) n++;
    return n;
#endif
}

/* floor(d / res) - origin: the tick of a time, relative to the origin. */
static double tick_of(const lw_wheel *w, double d) { return floor(d / w->res) - w->origin; }

/* -- construction -------------------------------------------------------- */
lw_wheel_status lw_wheel_new(double resolution, double start, lw_wheel **out) {
    *out = NULL;
    if (!(resolution >= LW_WHEEL_MIN_RESOLUTION && resolution <= LW_WHEEL_MAX_RESOLUTION))
        return LW_WHEEL_EINVAL;
    if (!isfinite(start) || fabs(start / resolution) >= 4503599627370496.0 /* 2**52 */)
        return LW_WHEEL_EINVAL;
    int levels = 2;
    uint64_t max_ahead = 0;
    for (; levels <= LW_WHEEL_MAX_LEVELS; levels++) {
        uint64_t range = (uint64_t)1 << (LW_WHEEL_SLOT_BITS * levels);
        uint64_t top_slot = range >> LW_WHEEL_SLOT_BITS;
        max_ahead = range - top_slot - 1;
        if ((double)max_ahead * resolution >= LW_WHEEL_MIN_HORIZON_SECONDS) break;
    }
    if (levels > LW_WHEEL_MAX_LEVELS) return LW_WHEEL_EINVAL;
    lw_wheel *w = calloc(1, sizeof(*w));
    if (!w) return LW_WHEEL_ENOMEM;
    w->res = resolution;
    w->origin = floor(start / resolution);
    w->time = start;
    w->max_ahead = max_ahead;
    w->levels = levels;
    w->free_head = NIL;
    for (size_t i = 0; i < sizeof(w->heads) / sizeof(w->heads[0]); i++) w->heads[i] = NIL;
    *out = w;
    return LW_WHEEL_OK;
}

void lw_wheel_free(lw_wheel *w) {
    if (!w) return;
    free(w->nodes);
    free(w->due);
    free(w);
}

void lw_wheel_clear(lw_wheel *w) {
    for (size_t i = 0; i < sizeof(w->heads) / sizeof(w->heads[0]); i++) w->heads[i] = NIL;
    memset(w->occupied, 0, sizeof(w->occupied));
    w->used = 0;
    w->free_head = NIL;
    w->len = 0;
}

double lw_wheel_resolution(const lw_wheel *w) { return w->res; }
int lw_wheel_levels(const lw_wheel *w) { return w->levels; }
double lw_wheel_horizon(const lw_wheel *w) { return (double)w->max_ahead * w->res; }
double lw_wheel_time(const lw_wheel *w) { return w->time; }
size_t lw_wheel_len(const lw_wheel *w) { return w->len; }
size_t lw_wheel_node_size(void) { return sizeof(node); }

size_t lw_wheel_memory(const lw_wheel *w) {
    return sizeof(*w) + (size_t)w->cap * sizeof(node) + w->due_cap * sizeof(lw_wheel_due);
}

/* -- slot lists ------------------------------------------------------------ */
static void link_node(lw_wheel *w, uint32_t h, unsigned slot) {
    node *n = &w->nodes[h];
    uint32_t head = w->heads[slot];
    n->slot = (uint16_t)slot;
    n->prev = NIL;
    n->next = head;
    if (head != NIL) w->nodes[head].prev = h;
    w->heads[slot] = h;
    w->occupied[slot >> LW_WHEEL_SLOT_BITS] |= (uint64_t)1 << (slot & SLOT_MASK);
}

static void unlink_node(lw_wheel *w, uint32_t h) {
    node *n = &w->nodes[h];
    unsigned slot = n->slot;
    if (n->prev != NIL)
        w->nodes[n->prev].next = n->next;
    else
        w->heads[slot] = n->next;
    if (n->next != NIL) w->nodes[n->next].prev = n->prev;
    if (w->heads[slot] == NIL)
        w->occupied[slot >> LW_WHEEL_SLOT_BITS] &= ~((uint64_t)1 << (slot & SLOT_MASK));
}

/* Detach a whole slot; returns its first node (the rest follow by .next). */
static uint32_t take_slot(lw_wheel *w, unsigned slot) {
    uint32_t h = w->heads[slot];
    w->heads[slot] = NIL;
    w->occupied[slot >> LW_WHEEL_SLOT_BITS] &= ~((uint64_t)1 << (slot & SLOT_MASK));
    return h;
}

/* The slot (level * 64 + index) that files `deadline` relative to cur. */
static unsigned slot_for(const lw_wheel *w, double deadline) {
    double q = tick_of(w, deadline);
    if (q <= (double)w->cur) return (unsigned)(w->cur & SLOT_MASK);
    uint64_t t = (uint64_t)q;
    unsigned level = highest_bit((w->cur ^ t) | SLOT_MASK) / LW_WHEEL_SLOT_BITS;
    if (level >= (unsigned)w->levels) level = (unsigned)w->levels - 1;
    unsigned index = (unsigned)((t >> (LW_WHEEL_SLOT_BITS * level)) & SLOT_MASK);
    return level * LW_WHEEL_SLOTS + index;
}

static void place(lw_wheel *w, uint32_t h) { link_node(w, h, slot_for(w, w->nodes[h].deadline)); }

/* The earliest occupied slot at or after the cursor: 1 and its slot and start
 * tick, or 0 when the wheel is empty. */
static int first_slot(const lw_wheel *w, unsigned *slot, uint64_t *start) {
    uint64_t cur = w->cur;
    uint64_t bits = w->occupied[0] & (~(uint64_t)0 << (cur & SLOT_MASK));
    if (bits) {
        unsigned i = ctz64(bits);
        *slot = i;
        *start = (cur & ~SLOT_MASK) + i;
        return 1;
    }
    for (int level = 1; level < w->levels; level++) {
        uint64_t occ = w->occupied[level];
        if (!occ) continue;
        unsigned shift = (unsigned)(LW_WHEEL_SLOT_BITS * level);
        unsigned c = (unsigned)((cur >> shift) & SLOT_MASK);
        uint64_t block = (cur >> (shift + LW_WHEEL_SLOT_BITS)) << (shift + LW_WHEEL_SLOT_BITS);
        uint64_t after = c == SLOT_MASK ? 0 : occ & (~(uint64_t)0 << (c + 1));
        if (after) {
            unsigned i = ctz64(after);
            *slot = (unsigned)level * LW_WHEEL_SLOTS + i;
            *start = block + ((uint64_t)i << shift);
            return 1;
        }
        /* Only the top level wraps into the next cycle. */
        unsigned i = ctz64(occ);
        *slot = (unsigned)level * LW_WHEEL_SLOTS + i;
        *start = block + ((uint64_t)1 << (shift + LW_WHEEL_SLOT_BITS)) + ((uint64_t)i << shift);
        return 1;
    }
    return 0;
}

/* The smallest time whose tick is `t` (or later): expire() at it reaches t. */
static double tick_start_time(const lw_wheel *w, uint64_t t) {
    double target = (double)t;
    double v = (w->origin + target) * w->res;
    while (tick_of(w, v) < target) v = nextafter(v, INFINITY);
    for (;;) {
        double p = nextafter(v, -INFINITY);
        if (tick_of(w, p) < target) break;
        v = p;
    }
    return v;
}

/* -- entries ---------------------------------------------------------------- */
lw_wheel_status lw_wheel_check(const lw_wheel *w, double deadline) {
    if (!isfinite(deadline)) return LW_WHEEL_EINVAL;
    if (tick_of(w, deadline) > (double)w->cur + (double)w->max_ahead) return LW_WHEEL_ERANGE;
    return LW_WHEEL_OK;
}

static int grow_slab(lw_wheel *w) {
    if (w->cap == NIL) return 0;
    uint64_t want = w->cap < 16 ? 16 : (uint64_t)w->cap + w->cap / 2;  /* 1.5x keeps <= 48 B/entry */
    if (want > NIL) want = NIL;
    node *grown = realloc(w->nodes, (size_t)want * sizeof(node));
    if (!grown) return 0;
    w->nodes = grown;
    w->cap = (uint32_t)want;
    return 1;
}

lw_wheel_status lw_wheel_insert(lw_wheel *w, double deadline, uint32_t *handle) {
    lw_wheel_status st = lw_wheel_check(w, deadline);
    if (st != LW_WHEEL_OK) return st;
    uint32_t h;
    if (w->free_head != NIL) {
        h = w->free_head;
        w->free_head = w->nodes[h].next;
    } else {
        if (w->used == w->cap && !grow_slab(w)) return LW_WHEEL_ENOMEM;
        if (w->used == NIL) return LW_WHEEL_ENOMEM;
        h = w->used++;
    }
    node *n = &w->nodes[h];
    n->deadline = deadline;
    n->seq = ++w->seq;
    place(w, h);
    w->len++;
    *handle = h;
    return LW_WHEEL_OK;
}

int lw_wheel_is_live(const lw_wheel *w, uint32_t handle) {
    return handle < w->used && w->nodes[handle].slot != FREE_SLOT;
}

double lw_wheel_deadline(const lw_wheel *w, uint32_t handle) { return w->nodes[handle].deadline; }

lw_wheel_status lw_wheel_move(lw_wheel *w, uint32_t handle, double deadline) {
    lw_wheel_status st = lw_wheel_check(w, deadline);
    if (st != LW_WHEEL_OK) return st;
    node *n = &w->nodes[handle];
    n->seq = ++w->seq;
    if (n->slot >= LW_WHEEL_SLOTS && deadline >= n->deadline) {
        /* Lazy: the node stays filed under an earlier tick and is refiled
         * when that slot comes due. */
        n->deadline = deadline;
        return LW_WHEEL_OK;
    }
    unsigned slot = slot_for(w, deadline);
    n->deadline = deadline;
    if (slot != n->slot) {
        unlink_node(w, handle);
        link_node(w, handle, slot);
    }
    return LW_WHEEL_OK;
}

static void free_node(lw_wheel *w, uint32_t h) {
    node *n = &w->nodes[h];
    n->slot = FREE_SLOT;
    n->next = w->free_head;
    w->free_head = h;
    w->len--;
}

void lw_wheel_remove(lw_wheel *w, uint32_t handle) {
    unlink_node(w, handle);
    free_node(w, handle);
}

int lw_wheel_next_deadline(const lw_wheel *w, double *out) {
    unsigned slot;
    uint64_t start;
    if (!first_slot(w, &slot, &start)) return 0;
    if (slot >= LW_WHEEL_SLOTS) {
        *out = tick_start_time(w, start);
        return 1;
    }
    double best = INFINITY;
    for (uint32_t h = w->heads[slot]; h != NIL; h = w->nodes[h].next)
        if (w->nodes[h].deadline < best) best = w->nodes[h].deadline;
    *out = best;
    return 1;
}

/* -- expiry ------------------------------------------------------------------ */
/* Append a node (already unlinked) to the due array. 0 when out of memory. */
static int push_due(lw_wheel *w, size_t *n_due, uint32_t h) {
    if (*n_due == w->due_cap) {
        size_t want = w->due_cap < 64 ? 64 : w->due_cap * 2;
        lw_wheel_due *grown = realloc(w->due, want * sizeof(*grown));
        if (!grown) return 0;
        w->due = grown;
        w->due_cap = want;
    }
    node *n = &w->nodes[h];
    n->slot = DUE_SLOT;
    w->due[(*n_due)++] = (lw_wheel_due){n->deadline, n->seq, h};
    return 1;
}

static int due_order(const void *a, const void *b) {
    const lw_wheel_due *x = a, *y = b;
    if (x->deadline < y->deadline) return -1;
    if (x->deadline > y->deadline) return 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

lw_wheel_status lw_wheel_expire(lw_wheel *w, double now, const lw_wheel_due **due,
                                size_t *count) {
    size_t n_due = 0;
    int failed = 0;
    *due = w->due;
    *count = 0;
    if (isnan(now)) return LW_WHEEL_EINVAL;
    if (now == -INFINITY) return LW_WHEEL_OK;

    double q = now == INFINITY ? INFINITY : tick_of(w, now);
    if (q < (double)w->cur) {
        /* Before the cursor only overdue nodes in the current slot can be due. */
        unsigned slot = (unsigned)(w->cur & SLOT_MASK);
        uint32_t h = w->heads[slot];
        while (h != NIL && !failed) {
            uint32_t next = w->nodes[h].next;
            if (w->nodes[h].deadline <= now) {
                unlink_node(w, h);
                if (!push_due(w, &n_due, h)) {
                    place(w, h);
                    failed = 1;
                }
            }
            h = next;
        }
    } else {
        /* Every node is filed less than 64**levels ticks after cur. */
        uint64_t limit = w->cur + ((uint64_t)1 << (LW_WHEEL_SLOT_BITS * w->levels));
        uint64_t target = q >= (double)limit ? limit : (uint64_t)q;
        unsigned slot;
        uint64_t start;
        while (!failed && first_slot(w, &slot, &start) && start <= target) {
            w->cur = start;
            uint32_t h = take_slot(w, slot);
            if (slot >= LW_WHEEL_SLOTS) {
                /* Cascade: refile the slot's nodes relative to the new cursor. */
                while (h != NIL) {
                    uint32_t next = w->nodes[h].next;
                    place(w, h);
                    h = next;
                }
                continue;
            }
            while (h != NIL) {
                uint32_t next = w->nodes[h].next;
                /* Not due: same tick, later in it, so it stays in this slot.
                 * Out of memory: refile it and stop. */
                if (failed || w->nodes[h].deadline > now || !push_due(w, &n_due, h)) {
                    failed = failed || w->nodes[h].deadline <= now;
                    place(w, h);
                }
                h = next;
            }
            if (w->heads[slot] != NIL) break; /* start == target: the rest is not due */
        }
        if (!failed && now != INFINITY && target > w->cur) w->cur = target;
    }
    if (failed) {
        /* Put back what was taken: the caller sees an unchanged set of entries. */
        for (size_t i = 0; i < n_due; i++) place(w, w->due[i].handle);
        return LW_WHEEL_ENOMEM;
    }
    if (now != INFINITY && now > w->time) w->time = now;
    if (n_due > 1) qsort(w->due, n_due, sizeof(lw_wheel_due), due_order);
    for (size_t i = 0; i < n_due; i++) free_node(w, w->due[i].handle);
    *due = w->due;
    *count = n_due;
    return LW_WHEEL_OK;
}
