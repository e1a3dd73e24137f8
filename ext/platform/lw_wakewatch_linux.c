/* lw_wakewatch on Linux: io_uring poll requests. See lw_wakewatch.h.
 *
 * The io_uring ABI is written out here (it is stable; build hosts such as
 * the manylinux images have headers older than the features used). A poll
 * request woken with a mask completes with it, without polling again
 * (io_uring/poll.c: "the mask was stashed"): that is the whole point. */
#if defined(__linux__)

#define _GNU_SOURCE

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lw_wakewatch.h"

#if !defined(SYS_io_uring_setup) && (defined(__x86_64__) || defined(__i386__) \
    || defined(__aarch64__) || defined(__arm__) || defined(__riscv) \
    || defined(__powerpc__) || defined(__s390__))
#define SYS_io_uring_setup 425
#define SYS_io_uring_enter 426
#endif

#if defined(SYS_io_uring_setup) && defined(SYS_io_uring_enter)

struct lw_sqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t user_addr;
};
struct lw_cqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t user_addr;
};
struct lw_uring_params {
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd;
    uint32_t resv[3];
    struct lw_sqring_offsets sq_off;
    struct lw_cqring_offsets cq_off;
};
struct lw_sqe { /* 64 bytes */
    uint8_t opcode, flags;
    uint16_t ioprio;
    int32_t fd;
    uint64_t off, addr;
    uint32_t len, op_flags; /* op_flags: poll32_events for a poll */
    uint64_t user_data;
    uint16_t buf_index, personality;
    int32_t file_index;
    uint64_t addr3, pad;
};
struct lw_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};
struct lw_timespec {
    int64_t tv_sec;
    long long tv_nsec;
};
struct lw_getevents_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz, min_wait_usec;
    uint64_t ts;
};

#define LW_OP_POLL_ADD 6
#define LW_ENTER_GETEVENTS 1u
#define LW_ENTER_EXT_ARG 8u
#define LW_FEAT_SINGLE_MMAP 1u
#define LW_FEAT_EXT_ARG (1u << 8)
#define LW_OFF_SQ_RING 0ULL
#define LW_OFF_SQES 0x10000000ULL
#define LW_ENTRIES 4

enum { TAG_FD = 1, TAG_OTHER = 2 };

#define RING_U32(w, off) ((uint32_t *)((char *)(w)->rings + (off)))

void lw_wakewatch_init(lw_wakewatch *w)
{
    memset(w, 0, sizeof *w);
    w->ring = -1;
    w->armed_fd = w->armed_other = -1;
}

void lw_wakewatch_close(lw_wakewatch *w)
{
    if (w->sqes)
        munmap(w->sqes, w->sqes_size);
    if (w->rings)
        munmap(w->rings, w->rings_size);
    if (w->ring >= 0)
        close(w->ring); /* cancels the pending requests */
    lw_wakewatch_init(w);
}

void lw_wakewatch_forget(lw_wakewatch *w, int close_fd)
{
    if (close_fd && w->ring >= 0)
        close(w->ring);
    lw_wakewatch_init(w);
}

int lw_wakewatch_open(lw_wakewatch *w)
{
    struct lw_uring_params p;
    size_t sq_size, cq_size;
    lw_wakewatch_init(w);
    memset(&p, 0, sizeof p);
    w->ring = (int)syscall(SYS_io_uring_setup, LW_ENTRIES, &p);
    if (w->ring < 0) {
        int err = errno;
        w->ring = -1;
        return err;
    }
    if (!(p.features & LW_FEAT_SINGLE_MMAP) || !(p.features & LW_FEAT_EXT_ARG)) {
        lw_wakewatch_close(w);
        return ENOSYS; /* Linux < 5.11: no timeout on the wait */
    }
    sq_size = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
    cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct lw_cqe);
    w->rings_size = sq_size > cq_size ? sq_size : cq_size;
    w->rings = mmap(NULL, w->rings_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                    w->ring, (off_t)LW_OFF_SQ_RING);
    if (w->rings == MAP_FAILED) {
        w->rings = NULL;
        lw_wakewatch_close(w);
        return ENOMEM;
    }
    w->sqes_size = p.sq_entries * sizeof(struct lw_sqe);
    w->sqes = mmap(NULL, w->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                   w->ring, (off_t)LW_OFF_SQES);
    if (w->sqes == MAP_FAILED) {
        w->sqes = NULL;
        lw_wakewatch_close(w);
        return ENOMEM;
    }
    w->sq_head = p.sq_off.head;
    w->sq_tail = p.sq_off.tail;
    w->sq_mask = p.sq_off.ring_mask;
    w->sq_array = p.sq_off.array;
    w->cq_head = p.cq_off.head;
    w->cq_tail = p.cq_off.tail;
    w->cq_mask = p.cq_off.ring_mask;
    w->cqes = p.cq_off.cqes;
    return 0;
}

/* Queue a single-shot poll for POLLIN on fd (submitted by the next enter). */
static void queue_poll(lw_wakewatch *w, int fd, uint64_t tag)
{
    uint32_t tail = *RING_U32(w, w->sq_tail), mask = *RING_U32(w, w->sq_mask);
    uint32_t idx = tail & mask;
    struct lw_sqe *sqe = (struct lw_sqe *)w->sqes + idx;
    uint32_t events = POLLIN;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    events = (events << 16) | (events >> 16); /* the kernel swaps poll32's halves */
#endif
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = LW_OP_POLL_ADD;
    sqe->fd = fd;
    sqe->op_flags = events;
    sqe->user_data = tag;
    RING_U32(w, w->sq_array)[idx] = idx;
    __atomic_store_n(RING_U32(w, w->sq_tail), tail + 1, __ATOMIC_RELEASE);
}

/* Take the completions there are: their tags' bits. */
static int reap(lw_wakewatch *w)
{
    uint32_t head = *RING_U32(w, w->cq_head), mask = *RING_U32(w, w->cq_mask);
    uint32_t tail = __atomic_load_n(RING_U32(w, w->cq_tail), __ATOMIC_ACQUIRE);
    int got = 0;
    while (head != tail) {
        const struct lw_cqe *cqe = (const struct lw_cqe *)((char *)w->rings + w->cqes) + (head & mask);
        if (cqe->user_data == TAG_FD) {
            w->armed_fd = -1;
            got |= LW_WAKEWATCH_FD; /* an error (the fd went away) wakes too */
        } else if (cqe->user_data == TAG_OTHER) {
            w->armed_other = -1;
            got |= LW_WAKEWATCH_OTHER;
        }
        head++;
    }
    __atomic_store_n(RING_U32(w, w->cq_head), head, __ATOMIC_RELEASE);
    return got;
}

void lw_wakewatch_flush(lw_wakewatch *w)
{
    if (w->ring >= 0)
        (void)reap(w);
}

int lw_wakewatch_wait(lw_wakewatch *w, int fd, int other, int timeout_ms)
{
    struct lw_timespec ts;
    struct lw_getevents_arg arg;
    unsigned submit = 0;
    int got;
    long r;
    if (w->ring < 0)
        return -1;
    if (w->armed_fd >= 0 && w->armed_fd != fd) {
        /* Another fd now: start over (closing cancels the old request). */
        lw_wakewatch_close(w);
        if (lw_wakewatch_open(w) != 0)
            return -1;
    }
    got = reap(w);
    if (got)
        return got;
    if (w->armed_fd < 0) {
        queue_poll(w, fd, TAG_FD);
        w->armed_fd = fd;
        submit++;
    }
    if (other >= 0 && w->armed_other < 0) {
        queue_poll(w, other, TAG_OTHER);
        w->armed_other = other;
        submit++;
    }
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
    memset(&arg, 0, sizeof arg);
    arg.ts = (uint64_t)(uintptr_t)&ts;
    r = syscall(SYS_io_uring_enter, w->ring, submit, 1u, LW_ENTER_GETEVENTS | LW_ENTER_EXT_ARG,
                &arg, sizeof arg);
    /* It returns how many requests it took when it took any (even if the
     * wait then timed out), else the wait's error: ETIME on timeout. */
    if ((r < 0 && (submit || (errno != ETIME && errno != EINTR)))
        || (r >= 0 && (unsigned long)r < submit)) {
        lw_wakewatch_close(w); /* requests not taken: start over, or fall back */
        return -1;
    }
    return reap(w);
}

#else /* no io_uring system calls known here */

void lw_wakewatch_init(lw_wakewatch *w)
{
    memset(w, 0, sizeof *w);
    w->ring = -1;
    w->armed_fd = w->armed_other = -1;
}

int lw_wakewatch_open(lw_wakewatch *w)
{
    lw_wakewatch_init(w);
    return ENOSYS;
}

void lw_wakewatch_flush(lw_wakewatch *w)
{
    (void)w;
}

int lw_wakewatch_wait(lw_wakewatch *w, int fd, int other, int timeout_ms)
{
    (void)w;
    (void)fd;
    (void)other;
    (void)timeout_ms;
    return -1;
}

void lw_wakewatch_close(lw_wakewatch *w)
{
    lw_wakewatch_init(w);
}

void lw_wakewatch_forget(lw_wakewatch *w, int close_fd)
{
    (void)close_fd;
    lw_wakewatch_init(w);
}

#endif

#else
typedef int lw_wakewatch_linux_unused;
#endif
