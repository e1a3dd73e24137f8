/*
 * lw_wheel: hierarchical timer wheel. See lw_wheel.h for the contract.
 *
 * The slots, the cursor and their invariants are lw_slots' (lw_slots.h);
 * this file keeps the nodes (a slab of 32-byte records, each with its exact
 * deadline and scheduling order) and decides what is due. Level-0 nodes are
 * filed under their exact deadline tick; nodes at level >= 1 may be filed
 * under an earlier tick than their deadline (lazy move) and are refiled
 * when that slot comes due.
 */
#include "lw_wheel.h"
#include "lw_slots.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NIL LW_SLOTS_NIL
#define FREE_SLOT LW_SLOTS_NONE
#define DUE_SLOT (UINT16_MAX - 1)

typedef struct node {
    double deadline;     /* exact, in seconds */
    uint64_t seq;        /* scheduling order, for ties */
    lw_slot_links links; /* its slot (lw_slots), FREE_SLOT or DUE_SLOT; .next: the free list */
} node;

_Static_assert(sizeof(node) <= 48, "a wheel node must stay within 48 bytes");

struct lw_wheel {
    lw_slots slots;       /* cursor, levels, slot heads; files `nodes` */
    double time;          /* latest `now` seen, or start */
    uint64_t seq;
    node *nodes;
    uint32_t cap, used, free_head;
    size_t len;
    lw_wheel_due *due;
    size_t due_cap;
};

/* -- construction -------------------------------------------------------- */
lw_wheel_status lw_wheel_new(double resolution, double start, lw_wheel **out) {
    *out = NULL;
    if (!(resolution >= LW_WHEEL_MIN_RESOLUTION && resolution <= LW_WHEEL_MAX_RESOLUTION))
        return LW_WHEEL_EINVAL;
    lw_wheel *w = calloc(1, sizeof(*w));
    if (!w) return LW_WHEEL_ENOMEM;
    if (lw_slots_init(&w->slots, resolution, start, sizeof(node), offsetof(node, links)) != 0) {
        free(w);
        return LW_WHEEL_EINVAL;
    }
    w->time = start;
    w->free_head = NIL;
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
    lw_slots_clear(&w->slots);
    w->used = 0;
    w->free_head = NIL;
    w->len = 0;
}

double lw_wheel_resolution(const lw_wheel *w) { return w->slots.res; }
int lw_wheel_levels(const lw_wheel *w) { return w->slots.levels; }
double lw_wheel_horizon(const lw_wheel *w) { return lw_slots_horizon(&w->slots); }
double lw_wheel_time(const lw_wheel *w) { return w->time; }
size_t lw_wheel_len(const lw_wheel *w) { return w->len; }
size_t lw_wheel_node_size(void) { return sizeof(node); }

size_t lw_wheel_memory(const lw_wheel *w) {
    return sizeof(*w) + (size_t)w->cap * sizeof(node) + w->due_cap * sizeof(lw_wheel_due);
}

static void place(lw_wheel *w, uint32_t h) { lw_slots_file(&w->slots, h, w->nodes[h].deadline); }

/* -- entries ---------------------------------------------------------------- */
lw_wheel_status lw_wheel_check(const lw_wheel *w, double deadline) {
    if (!isfinite(deadline)) return LW_WHEEL_EINVAL;
    if (!lw_slots_accepts(&w->slots, deadline)) return LW_WHEEL_ERANGE;
    return LW_WHEEL_OK;
}

static int grow_slab(lw_wheel *w) {
    if (w->cap == NIL) return 0;
    uint64_t want = w->cap < 16 ? 16 : (uint64_t)w->cap + w->cap / 2;  /* 1.5x keeps <= 48 B/entry */
    if (want > NIL) want = NIL;
    node *grown = realloc(w->nodes, (size_t)want * sizeof(node));
    if (!grown) return 0;
    w->nodes = grown;
    w->slots.base = (char *)grown;
    w->cap = (uint32_t)want;
    return 1;
}

lw_wheel_status lw_wheel_insert(lw_wheel *w, double deadline, uint32_t *handle) {
    lw_wheel_status st = lw_wheel_check(w, deadline);
    if (st != LW_WHEEL_OK) return st;
    uint32_t h;
    if (w->free_head != NIL) {
        h = w->free_head;
        w->free_head = w->nodes[h].links.next;
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
    return handle < w->used && w->nodes[handle].links.slot != FREE_SLOT;
}

double lw_wheel_deadline(const lw_wheel *w, uint32_t handle) { return w->nodes[handle].deadline; }

lw_wheel_status lw_wheel_move(lw_wheel *w, uint32_t handle, double deadline) {
    lw_wheel_status st = lw_wheel_check(w, deadline);
    if (st != LW_WHEEL_OK) return st;
    node *n = &w->nodes[handle];
    n->seq = ++w->seq;
    if (n->links.slot >= LW_SLOTS_PER_LEVEL && deadline >= n->deadline) {
        /* Lazy: the node stays filed under an earlier tick and is refiled
         * when that slot comes due. */
        n->deadline = deadline;
        return LW_WHEEL_OK;
    }
    unsigned slot = lw_slots_slot_for(&w->slots, deadline);
    n->deadline = deadline;
    if (slot != n->links.slot) {
        lw_slots_unlink(&w->slots, handle);
        lw_slots_link(&w->slots, handle, slot);
    }
    return LW_WHEEL_OK;
}

static void free_node(lw_wheel *w, uint32_t h) {
    node *n = &w->nodes[h];
    n->links.slot = FREE_SLOT;
    n->links.next = w->free_head;
    w->free_head = h;
    w->len--;
}

void lw_wheel_remove(lw_wheel *w, uint32_t handle) {
    lw_slots_unlink(&w->slots, handle);
    free_node(w, handle);
}

int lw_wheel_next_deadline(const lw_wheel *w, double *out) {
    unsigned slot;
    uint64_t start;
    if (!lw_slots_first(&w->slots, &slot, &start)) return 0;
    if (slot >= LW_SLOTS_PER_LEVEL) {
        *out = lw_slots_tick_start_time(&w->slots, start);
        return 1;
    }
    double best = INFINITY;
    for (uint32_t h = w->slots.heads[slot]; h != NIL; h = w->nodes[h].links.next)
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
    n->links.slot = DUE_SLOT;
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

    lw_slots *sl = &w->slots;
    double q = now == INFINITY ? INFINITY : lw_slots_tick_of(sl, now);
    if (q < (double)sl->cur) {
        /* Before the cursor only overdue nodes in the current slot can be due. */
        unsigned slot = (unsigned)(sl->cur & (LW_SLOTS_PER_LEVEL - 1));
        uint32_t h = sl->heads[slot];
        while (h != NIL && !failed) {
            uint32_t next = w->nodes[h].links.next;
            if (w->nodes[h].deadline <= now) {
                lw_slots_unlink(sl, h);
                if (!push_due(w, &n_due, h)) {
                    place(w, h);
                    failed = 1;
                }
            }
            h = next;
        }
    } else {
        /* Every node is filed less than 64**levels ticks after cur. */
        uint64_t limit = sl->cur + ((uint64_t)1 << (LW_SLOTS_BITS * sl->levels));
        /* Past one span of the top level everything filed is due (nothing
         * is filed further ahead), so the cursor may go straight to now's
         * tick, however far: a check years after the last one files what
         * follows relative to now. Only a tick count too large for the
         * cursor (a `now` of about 10**16 s) stops at one span. */
        uint64_t target = q < (double)limit ? (uint64_t)q : q < LW_SLOTS_FAR_TICK ? (uint64_t)q : limit;
        unsigned slot;
        uint64_t start;
        while (!failed && lw_slots_first(sl, &slot, &start) && start <= target) {
            sl->cur = start;
            uint32_t h = lw_slots_take(sl, slot);
            if (slot >= LW_SLOTS_PER_LEVEL) {
                /* Cascade: refile the slot's nodes relative to the new cursor. */
                while (h != NIL) {
                    uint32_t next = w->nodes[h].links.next;
                    place(w, h);
                    h = next;
                }
                continue;
            }
            while (h != NIL) {
                uint32_t next = w->nodes[h].links.next;
                /* Not due: same tick, later in it, so it stays in this slot.
                 * Out of memory: refile it and stop. */
                if (failed || w->nodes[h].deadline > now || !push_due(w, &n_due, h)) {
                    failed = failed || w->nodes[h].deadline <= now;
                    place(w, h);
                }
                h = next;
            }
            if (sl->heads[slot] != NIL) break; /* start == target: the rest is not due */
        }
        if (!failed && now != INFINITY && target > sl->cur) sl->cur = target;
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
