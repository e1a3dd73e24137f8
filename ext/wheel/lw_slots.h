/*
 * lw_slots: the slots of a hierarchical timer wheel (tokio's and Linux's
 * design), over nodes that live in the caller's own array.
 *
 * Time is cut in ticks of `res` seconds. A node is filed under one tick in
 * one of `levels` levels of 64 slots: level L slot i covers 64**L ticks. A
 * 64-bit occupancy bitmap per level finds the next non-empty slot with one
 * count-trailing-zeros, so the earliest occupied slot is found in O(levels)
 * however many nodes there are.
 *
 * The nodes are the caller's: an array of fixed-size records (`stride`
 * bytes each, at `base`), each holding an lw_slot_links at `links_off`. So
 * lw_wheel keeps 32-byte nodes of its own and lw_sessions files its session
 * records themselves, with no second allocation and no second lookup. The
 * caller updates `base` when its array moves.
 *
 * What a node's deadline is, and so when a filed node is due, is the
 * caller's business: these functions only file, unlink and find slots.
 * Invariants (cur is the cursor tick, relative to `origin`):
 *  - A node whose tick is <= cur sits in level 0 slot cur & 63.
 *  - Otherwise a node sits at the level of the highest bit in which its
 *    tick differs from cur (clamped to the top level), in the slot given by
 *    its tick's bits at that level: every level-0 slot precedes every
 *    level-1 slot, and so on (only the top level wraps).
 *  - Ticks are at most max_ahead = 64**L - 64**(L-1) - 1 after cur, which
 *    keeps a wrapped top-level slot from meeting cur's own.
 * Portable C11, no Python.h.
 */
#ifndef LW_SLOTS_H
#define LW_SLOTS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LW_SLOTS_BITS 6
#define LW_SLOTS_PER_LEVEL 64
#define LW_SLOTS_MAX_LEVELS 10
#define LW_SLOTS_NIL UINT32_MAX
/* lw_slot_links.slot of a node filed nowhere (free, due, or unscheduled). */
#define LW_SLOTS_NONE UINT16_MAX
/* The furthest tick a cursor moves to in one expiry (2**62: far beyond any
 * clock a wheel can start at, and exact in a double). */
#define LW_SLOTS_FAR_TICK 4611686018427387904.0
/* Every wheel accepts deadlines at least this far ahead of its time. */
#define LW_SLOTS_MIN_HORIZON_SECONDS (2.0 * 365.25 * 86400.0)

typedef struct lw_slot_links {
    uint32_t next;  /* the slot's list */
    uint32_t prev;
    uint16_t slot;  /* level * 64 + index, or LW_SLOTS_NONE */
    uint8_t tag[2]; /* the node's owner's (padding otherwise): never touched here */
} lw_slot_links;

typedef struct lw_slots {
    double res;
    double origin;       /* floor(start / res), an integer-valued double */
    uint64_t cur;        /* cursor tick, relative to origin */
    uint64_t max_ahead;  /* in ticks */
    int levels;
    char *base;          /* the caller's nodes */
    size_t stride;       /* bytes per node */
    size_t links_off;    /* offset of the node's lw_slot_links */
    uint64_t occupied[LW_SLOTS_MAX_LEVELS];
    uint32_t heads[LW_SLOTS_MAX_LEVELS * LW_SLOTS_PER_LEVEL];
} lw_slots;

/* 0, or -1 when res or start cannot make a wheel (res outside [1e-6, 3600],
 * start not finite or too far from 0 in ticks). Empty, cursor at start. */
int lw_slots_init(lw_slots *s, double res, double start, size_t stride, size_t links_off);
/* Empty every slot (the nodes are left as they are). */
void lw_slots_clear(lw_slots *s);

static inline lw_slot_links *lw_slots_links(const lw_slots *s, uint32_t h)
{
    return (lw_slot_links *)(s->base + (size_t)h * s->stride + s->links_off);
}

/* The tick of a time, relative to the origin (floor). */
double lw_slots_tick_of(const lw_slots *s, double t);
/* The slot that files a deadline relative to the cursor. */
unsigned lw_slots_slot_for(const lw_slots *s, double deadline);
/* Whether a deadline is within the horizon (finite, at most max_ahead). */
int lw_slots_accepts(const lw_slots *s, double deadline);
void lw_slots_link(lw_slots *s, uint32_t h, unsigned slot);
void lw_slots_unlink(lw_slots *s, uint32_t h);
/* lw_slots_link(s, h, lw_slots_slot_for(s, deadline)). */
void lw_slots_file(lw_slots *s, uint32_t h, double deadline);
/* Detach a whole slot: its first node (the rest follow by .next), each
 * still marked with the slot. */
uint32_t lw_slots_take(lw_slots *s, unsigned slot);
/* The earliest occupied slot at or after the cursor: 1 with its slot and
 * start tick, or 0 when every slot is empty. */
int lw_slots_first(const lw_slots *s, unsigned *slot, uint64_t *start);
/* The smallest time whose tick is `t`: an expiry at it reaches tick t. */
double lw_slots_tick_start_time(const lw_slots *s, uint64_t t);
/* How far ahead of the cursor's time a deadline may be, in seconds. */
double lw_slots_horizon(const lw_slots *s);

#ifdef __cplusplus
}
#endif

#endif /* LW_SLOTS_H */
