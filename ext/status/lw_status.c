/* The status server thread: see lw_status.h. */
#if defined(__linux__)
#define _GNU_SOURCE /* accept4 */
#elif !defined(__APPLE__)
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "lw_loop_clock.h"
#include "lw_status.h"

#define LW_STATUS_MAX_BATCH 1024     /* connections answered per publication */
#define LW_STATUS_WRITE_NS 200000000 /* a client that does not read: dropped after 200 ms */
#define LW_STATUS_WATCH_MS 25        /* the watchdog's shortest sleep while stall lines are on */
#define LW_STATUS_STACK_MAX 32768    /* bytes of a stack dump kept */
#define LW_STATUS_NAME_MAX 256    /* bytes of a loop name or line prefix kept */
#define LW_STATUS_SESSIONS_MAX 65536 /* bytes of one registry's live sessions */
#define LW_STATUS_STUCK_LISTED 50    /* stuck sessions listed per registry (document.MAX_STUCK_LISTED) */

typedef struct status_sessions {
    int64_t id;
    void *table;
    lw_status_sessions_fn write;
} status_sessions;

typedef struct status_loop {
    int64_t id;
    const lw_loop *loop;
    void *thread_state;
    char name[LW_STATUS_NAME_MAX];
    char line_prefix[LW_STATUS_NAME_MAX]; /* the watchdog line's; "" for the default */
    int64_t acked_stall; /* the reporter has reported this stall */
    int64_t lined_stall; /* the watchdog has written a line for this stall */
} status_loop;

struct lw_status {
    int listen_fd;
    int scratch_fd;
    int wake[2];
    int64_t fresh_wait_ns;

    pthread_mutex_t mutex;   /* guards everything below */
    pthread_cond_t req_cond; /* the publisher waits on it */
    pthread_cond_t pub_cond; /* the server waits on it */
    int running;
    int stopping;
    int dead; /* after fork: never again */
    pthread_t thread;

    char *published;
    size_t published_len;
    int64_t published_ns;
    uint64_t requested; /* requests made by the server */
    uint64_t taken;     /* the request the publisher is answering */
    uint64_t answered;  /* the request the last publication answered */

    status_loop *loops;
    int nloops;
    int caploops;

    status_sessions *sessions;
    int nsessions;
    int capsessions;
    char *sessions_buf; /* LW_STATUS_SESSIONS_MAX, allocated on first use */

    lw_status_stack_fn stack_fn;
    int stall_fd;
    int64_t stall_grace_ns;
    int pid;

    _Atomic int64_t served;
    _Atomic int64_t stall_lines;
};

/* -- a growable text buffer ---------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_reserve(sbuf *b, size_t more)
{
    size_t want;
    char *p;
    if (b->oom || b->len + more + 1 <= b->cap)
        return;
    want = b->cap ? b->cap : 4096;
    while (want < b->len + more + 1)
        want *= 2;
    p = realloc(b->p, want);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = want;
}

static void sb_put(sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_fmt(sbuf *b, const char *fmt, double a, long long c)
{
    /* Only the shapes used here: one double or one integer. */
    char tmp[64];
    int n = strchr(fmt, 'f') || strchr(fmt, 'g') ? snprintf(tmp, sizeof tmp, fmt, a)
                                                  : snprintf(tmp, sizeof tmp, fmt, c);
    if (n > 0)
        sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string: quotes, backslashes and control characters escaped; bytes
 * >= 0x80 kept (UTF-8 passes through; CPython's dumps are ASCII). */
static void sb_json_string(sbuf *b, const char *s, size_t n)
{
    size_t i;
    sb_put(b, "\"", 1);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sb_put(b, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* A name fit for a log line: control characters as \xNN, as repr does. */
static void printable(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 5 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == '\\')
            o += (size_t)snprintf(out + o, cap - o, c == '\\' ? "\\\\" : "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
}

/* -- descriptors ---------------------------------------------------------- */

static void set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL, 0);
    if (flags >= 0)
        (void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static int accept_client(int listen_fd)
{
    int fd;
#if defined(__linux__)
    fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
    fd = accept(listen_fd, NULL, NULL);
    if (fd >= 0) {
        set_nonblocking(fd);
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
#endif
#if defined(SO_NOSIGPIPE)
    if (fd >= 0) {
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
    }
#endif
    return fd;
}

/* Write all of buf to a client, waiting at most LW_STATUS_WRITE_NS for one
 * that reads slowly; never raises SIGPIPE. */
static int send_all(int fd, const char *buf, size_t len)
{
    int64_t deadline = lw_loop_now_ns() + LW_STATUS_WRITE_NS;
#if defined(MSG_NOSIGNAL)
    const int flags = MSG_NOSIGNAL;
#else
    const int flags = 0;
#endif
    while (len > 0) {
        ssize_t n = send(fd, buf, len, flags);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {fd, POLLOUT, 0};
            int64_t left = deadline - lw_loop_now_ns();
            if (left <= 0 || poll(&p, 1, (int)(left / 1000000) + 1) <= 0)
                return -1;
            continue;
        }
        return -1;
    }
    return 0;
}

/* What a client sent is never read, but closing a Unix socket with unread
 * input resets the connection, and the client could lose the document:
 * drop what is there now (bounded), then close. */
static void discard_input(int fd)
{
    char junk[4096];
    int rounds;
    for (rounds = 0; rounds < 64; rounds++)
        if (recv(fd, junk, sizeof junk, 0) <= 0)
            break;
}

/* -- lifecycle ------------------------------------------------------------ */

lw_status *lw_status_new(int listen_fd, int scratch_fd, int64_t fresh_wait_ns)
{
    lw_status *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->listen_fd = listen_fd;
    s->scratch_fd = scratch_fd;
    s->fresh_wait_ns = fresh_wait_ns > 0 ? fresh_wait_ns : 0;
    s->stall_fd = -1;
    s->wake[0] = s->wake[1] = -1;
    atomic_init(&s->served, 0);
    atomic_init(&s->stall_lines, 0);
    if (pipe(s->wake) != 0)
        goto fail;
    set_nonblocking(s->wake[0]);
    set_nonblocking(s->wake[1]);
    (void)fcntl(s->wake[0], F_SETFD, FD_CLOEXEC);
    (void)fcntl(s->wake[1], F_SETFD, FD_CLOEXEC);
    if (pthread_mutex_init(&s->mutex, NULL) != 0)
        goto fail;
    if (lw_loop_cond_init(&s->req_cond) != 0) {
        pthread_mutex_destroy(&s->mutex);
        goto fail;
    }
    if (lw_loop_cond_init(&s->pub_cond) != 0) {
        pthread_cond_destroy(&s->req_cond);
        pthread_mutex_destroy(&s->mutex);
        goto fail;
    }
    return s;
fail:
    if (s->wake[0] >= 0) {
        close(s->wake[0]);
        close(s->wake[1]);
    }
    free(s);
    return NULL;
}

static void close_fds(lw_status *s)
{
    int *fds[] = {&s->listen_fd, &s->scratch_fd, &s->wake[0], &s->wake[1]};
    size_t i;
    for (i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
}

void lw_status_free(lw_status *s)
{
    if (!s)
        return;
    lw_status_stop(s);
    close_fds(s);
    pthread_cond_destroy(&s->pub_cond);
    pthread_cond_destroy(&s->req_cond);
    pthread_mutex_destroy(&s->mutex);
    free(s->published);
    free(s->loops);
    free(s->sessions);
    free(s->sessions_buf);
    free(s);
}

static void *server_main(void *arg);

int lw_status_start(lw_status *s)
{
    int err;
    pthread_mutex_lock(&s->mutex);
    if (s->dead || s->wake[0] < 0) {
        pthread_mutex_unlock(&s->mutex);
        return EBADF;
    }
    if (s->running) {
        pthread_mutex_unlock(&s->mutex);
        return EALREADY;
    }
    s->stopping = 0;
    err = pthread_create(&s->thread, NULL, server_main, s);
    if (err == 0)
        s->running = 1;
    pthread_mutex_unlock(&s->mutex);
    return err;
}

void lw_status_stop(lw_status *s)
{
    pthread_t thread;
    int joinable;
    char one = 1;
    pthread_mutex_lock(&s->mutex);
    s->stopping = 1;
    joinable = s->running;
    thread = s->thread;
    s->running = 0;
    pthread_cond_broadcast(&s->req_cond);
    pthread_cond_broadcast(&s->pub_cond);
    if (s->wake[1] >= 0)
        (void)!write(s->wake[1], &one, 1);
    pthread_mutex_unlock(&s->mutex);
    if (joinable)
        pthread_join(thread, NULL);
}

void lw_status_after_fork_child(lw_status *s)
{
    /* The mutex may have been held by the thread that was not copied. */
    (void)pthread_mutex_init(&s->mutex, NULL);
    (void)lw_loop_cond_init(&s->req_cond);
    (void)lw_loop_cond_init(&s->pub_cond);
    s->running = 0;
    s->stopping = 1;
    s->dead = 1;
    s->nloops = 0;
    close_fds(s);
}

/* -- configuration -------------------------------------------------------- */

void lw_status_set_stack_dumper(lw_status *s, lw_status_stack_fn fn)
{
    pthread_mutex_lock(&s->mutex);
    s->stack_fn = fn;
    pthread_mutex_unlock(&s->mutex);
}

void lw_status_set_stall_lines(lw_status *s, int fd, int64_t grace_ns, int pid)
{
    char one = 1;
    pthread_mutex_lock(&s->mutex);
    s->stall_fd = fd;
    s->stall_grace_ns = grace_ns > 0 ? grace_ns : 0;
    s->pid = pid;
    if (s->wake[1] >= 0) /* re-read the poll timeout */
        (void)!write(s->wake[1], &one, 1);
    pthread_mutex_unlock(&s->mutex);
}

static status_loop *find_loop(lw_status *s, int64_t id)
{
    int i;
    for (i = 0; i < s->nloops; i++)
        if (s->loops[i].id == id)
            return &s->loops[i];
    return NULL;
}

int lw_status_add_loop(lw_status *s, int64_t id, const lw_loop *loop, void *thread_state,
                       const char *name, const char *line_prefix)
{
    status_loop *l;
    int err = 0;
    char one = 1;
    pthread_mutex_lock(&s->mutex);
    if (find_loop(s, id)) {
        err = EEXIST;
    } else if (s->nloops == s->caploops) {
        int cap = s->caploops ? s->caploops * 2 : 4;
        status_loop *p = realloc(s->loops, (size_t)cap * sizeof *p);
        if (!p)
            err = ENOMEM;
        else {
            s->loops = p;
            s->caploops = cap;
        }
    }
    if (!err) {
        l = &s->loops[s->nloops++];
        memset(l, 0, sizeof *l);
        l->id = id;
        l->loop = loop;
        l->thread_state = thread_state;
        snprintf(l->name, sizeof l->name, "%s", name ? name : "");
        snprintf(l->line_prefix, sizeof l->line_prefix, "%s", line_prefix ? line_prefix : "");
        if (s->wake[1] >= 0)
            (void)!write(s->wake[1], &one, 1);
    }
    pthread_mutex_unlock(&s->mutex);
    return err;
}

void lw_status_remove_loop(lw_status *s, int64_t id)
{
    status_loop *l;
    pthread_mutex_lock(&s->mutex);
    l = find_loop(s, id);
    if (l) {
        *l = s->loops[s->nloops - 1];
        s->nloops--;
    }
    pthread_mutex_unlock(&s->mutex);
}

int lw_status_add_sessions(lw_status *s, int64_t id, void *table, lw_status_sessions_fn write)
{
    int err = 0, i;
    pthread_mutex_lock(&s->mutex);
    for (i = 0; i < s->nsessions; i++)
        if (s->sessions[i].id == id)
            err = EEXIST;
    if (!err && s->nsessions == s->capsessions) {
        int cap = s->capsessions ? s->capsessions * 2 : 2;
        status_sessions *p = realloc(s->sessions, (size_t)cap * sizeof *p);
        if (!p)
            err = ENOMEM;
        else {
            s->sessions = p;
            s->capsessions = cap;
        }
    }
    if (!err) {
        s->sessions[s->nsessions].id = id;
        s->sessions[s->nsessions].table = table;
        s->sessions[s->nsessions].write = write;
        s->nsessions++;
    }
    pthread_mutex_unlock(&s->mutex);
    return err;
}

void lw_status_remove_sessions(lw_status *s, int64_t id)
{
    int i;
    pthread_mutex_lock(&s->mutex);
    for (i = 0; i < s->nsessions; i++) {
        if (s->sessions[i].id == id) {
            s->sessions[i] = s->sessions[s->nsessions - 1];
            s->nsessions--;
            break;
        }
    }
    pthread_mutex_unlock(&s->mutex);
}

void lw_status_ack_stall(lw_status *s, int64_t id, int64_t stall_id)
{
    status_loop *l;
    pthread_mutex_lock(&s->mutex);
    l = find_loop(s, id);
    if (l && stall_id > l->acked_stall)
        l->acked_stall = stall_id;
    pthread_mutex_unlock(&s->mutex);
}

int64_t lw_status_served(const lw_status *s) { return atomic_load(&((lw_status *)s)->served); }

int64_t lw_status_stall_lines(const lw_status *s)
{
    return atomic_load(&((lw_status *)s)->stall_lines);
}

/* -- the publisher (Python side) ------------------------------------------ */

int lw_status_wait_request(lw_status *s, int64_t timeout_ns)
{
    int result;
    int64_t deadline = timeout_ns >= 0 ? lw_loop_now_ns() + timeout_ns : 0;
    pthread_mutex_lock(&s->mutex);
    for (;;) {
        if (s->stopping) {
            result = -1;
            break;
        }
        if (s->requested != s->taken) {
            s->taken = s->requested;
            result = 1;
            break;
        }
        if (timeout_ns < 0) {
            pthread_cond_wait(&s->req_cond, &s->mutex);
        } else {
            if (lw_loop_now_ns() >= deadline) {
                result = 0;
                break;
            }
            lw_loop_cond_wait_until(&s->req_cond, &s->mutex, deadline);
        }
    }
    pthread_mutex_unlock(&s->mutex);
    return result;
}

int lw_status_publish(lw_status *s, const char *json, size_t len)
{
    char *copy;
    if (len < 2 || json[0] != '{')
        return EINVAL;
    copy = malloc(len + 1);
    if (!copy)
        return ENOMEM;
    memcpy(copy, json, len);
    copy[len] = '\0';
    pthread_mutex_lock(&s->mutex);
    free(s->published);
    s->published = copy;
    s->published_len = len;
    s->published_ns = lw_loop_now_ns();
    s->answered = s->taken;
    pthread_cond_broadcast(&s->pub_cond);
    pthread_mutex_unlock(&s->mutex);
    return 0;
}

/* -- the server thread ---------------------------------------------------- */

/* The loop thread's stack as text, read while no Python code runs; the
 * stall must still be the same one afterwards. mutex held. */
static void dump_stack(lw_status *s, status_loop *l, const lw_loop_live *before, sbuf *doc)
{
    char buf[LW_STATUS_STACK_MAX];
    ssize_t n;
    lw_loop_live after;
    if (!s->stack_fn || s->scratch_fd < 0 || !l->thread_state) {
        sb_str(doc, ",\"stack_text\":null,\"stack_error\":\"unavailable: this CPython has no "
                    "traceback dumper that runs without the GIL\"");
        return;
    }
    if (lseek(s->scratch_fd, 0, SEEK_SET) != 0 || ftruncate(s->scratch_fd, 0) != 0) {
        sb_str(doc, ",\"stack_text\":null,\"stack_error\":\"unavailable: scratch file\"");
        return;
    }
    s->stack_fn(s->scratch_fd, l->thread_state);
    n = pread(s->scratch_fd, buf, sizeof buf, 0);
    lw_loop_read_live(l->loop, &after);
    if (!after.in_stall || after.stall_id != before->stall_id) {
        sb_str(doc, ",\"stack_text\":null,\"stack_error\":\"the stall ended while the stack "
                    "was read\"");
        return;
    }
    sb_str(doc, ",\"stack_text\":");
    sb_json_string(doc, buf, n > 0 ? (size_t)n : 0);
    sb_str(doc, ",\"stack_error\":null");
}

/* The document for one batch of clients. mutex held. `fresh`: the Python
 * side answered this batch's request (Python code can run). */
static void build_document(lw_status *s, sbuf *doc, int fresh)
{
    int64_t now = lw_loop_now_ns();
    int i;
    doc->len = 0;
    sb_str(doc, "{\"served_by\":\"native\",\"published_age_s\":");
    if (s->published)
        sb_fmt(doc, "%.6f", (double)(now - s->published_ns) / 1e9, 0);
    else
        sb_str(doc, "null");
    sb_str(doc, ",\"live\":{\"python_answered\":");
    sb_str(doc, fresh ? "true" : "false");
    sb_str(doc, ",\"loops\":[");
    for (i = 0; i < s->nloops; i++) {
        status_loop *l = &s->loops[i];
        lw_loop_live live;
        lw_loop_read_live(l->loop, &live);
        if (i)
            sb_str(doc, ",");
        sb_fmt(doc, "{\"id\":%lld", 0, (long long)l->id);
        sb_str(doc, ",\"name\":");
        sb_json_string(doc, l->name, strlen(l->name));
        sb_str(doc, live.running ? ",\"sampling\":true" : ",\"sampling\":false");
        sb_str(doc, live.paused ? ",\"loop_running\":false" : ",\"loop_running\":true");
        sb_fmt(doc, ",\"heartbeat_age_s\":%.6f", (double)(now - live.heartbeat_ns) / 1e9, 0);
        sb_fmt(doc, ",\"samples\":%lld", 0, (long long)live.samples);
        if (live.running && live.in_stall) {
            sb_fmt(doc, ",\"stalled\":true,\"stall_id\":%lld", 0, (long long)live.stall_id);
            sb_fmt(doc, ",\"stall_so_far_s\":%.6f",
                   (double)(now - live.stall_started_ns) / 1e9, 0);
            if (fresh)
                sb_str(doc, ",\"stack_text\":null,\"stack_error\":null");
            else
                dump_stack(s, l, &live, doc);
        } else {
            sb_str(doc, ",\"stalled\":false");
        }
        sb_str(doc, "}");
    }
    sb_str(doc, "]");
    /* The registries as their tables know them now: only when the
     * published part (which has them too) may be stale. */
    if (!fresh && s->nsessions) {
        if (!s->sessions_buf)
            s->sessions_buf = malloc(LW_STATUS_SESSIONS_MAX);
        sb_str(doc, ",\"sessions\":[");
        for (i = 0; i < s->nsessions && s->sessions_buf; i++) {
            size_t n = s->sessions[i].write(s->sessions[i].table, s->sessions_buf,
                                            LW_STATUS_SESSIONS_MAX, LW_STATUS_STUCK_LISTED, -1.0);
            if (i)
                sb_str(doc, ",");
            sb_fmt(doc, "{\"id\":%lld,\"table\":", 0, (long long)s->sessions[i].id);
            if (n)
                sb_put(doc, s->sessions_buf, n);
            else
                sb_str(doc, "null");
            sb_str(doc, "}");
        }
        sb_str(doc, "]");
    }
    sb_str(doc, "}");
    if (s->published) {
        sb_str(doc, ",");
        sb_put(doc, s->published + 1, s->published_len - 1);
    } else {
        sb_fmt(doc, ",\"pid\":%lld}", 0, (long long)getpid());
    }
    sb_str(doc, "\n");
}

static void answer(lw_status *s, int *clients, int n, sbuf *doc)
{
    int i, fresh;
    uint64_t target;
    int64_t deadline;
    pthread_mutex_lock(&s->mutex);
    target = ++s->requested;
    pthread_cond_broadcast(&s->req_cond);
    deadline = lw_loop_now_ns() + s->fresh_wait_ns;
    while (s->answered < target && !s->stopping && lw_loop_now_ns() < deadline)
        lw_loop_cond_wait_until(&s->pub_cond, &s->mutex, deadline);
    fresh = s->answered >= target;
    build_document(s, doc, fresh);
    pthread_mutex_unlock(&s->mutex);
    for (i = 0; i < n; i++) {
        if (!doc->oom && send_all(clients[i], doc->p, doc->len) == 0)
            atomic_fetch_add(&s->served, 1);
        discard_input(clients[i]);
        close(clients[i]);
    }
}

/* Stalls the Python reporter has not reported: one line each, written
 * while the stall goes on. mutex held. */
static void watchdog(lw_status *s)
{
    int64_t now = lw_loop_now_ns();
    int i;
    if (s->stall_fd < 0)
        return;
    for (i = 0; i < s->nloops; i++) {
        status_loop *l = &s->loops[i];
        lw_loop_live live;
        char name[LW_STATUS_NAME_MAX * 4 + 1], prefix[LW_STATUS_NAME_MAX * 4 + 1];
        char line[2 * LW_STATUS_NAME_MAX * 4 + 512];
        double so_far, threshold;
        int n;
        lw_loop_read_live(l->loop, &live);
        if (!live.running || !live.in_stall || live.stall_id <= l->acked_stall
            || live.stall_id <= l->lined_stall)
            continue;
        if (now - live.stall_started_ns < live.threshold_ns + s->stall_grace_ns)
            continue;
        l->lined_stall = live.stall_id;
        so_far = (double)(now - live.stall_started_ns) / 1e9;
        threshold = (double)live.threshold_ns / 1e9;
        if (l->line_prefix[0]) {
            /* the same shape as the Python reporter's line, under the
             * prefix that names process, loop and thread */
            printable(prefix, sizeof prefix, l->line_prefix);
            n = snprintf(line, sizeof line,
                         "%s: event loop stall #%lld in progress: blocked for %.3f s "
                         "(threshold %.3f s); no Python code has run since it passed the "
                         "threshold (the GIL is held, likely in native code): reported by "
                         "the native watchdog\n",
                         prefix, (long long)live.stall_id, so_far, threshold);
        } else {
            printable(name, sizeof name, l->name);
            n = snprintf(line, sizeof line,
                         "loopwatch: stall #%lld on %s (pid %d) going on for %.2f s; no Python "
                         "code has run since it passed the threshold (the GIL is held, likely "
                         "in native code): reported by the native watchdog\n",
                         (long long)live.stall_id, name, s->pid, so_far);
        }
        if (n > 0)
            (void)!write(s->stall_fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        if (s->stack_fn && l->thread_state)
            s->stack_fn(s->stall_fd, l->thread_state);
        atomic_fetch_add(&s->stall_lines, 1);
    }
}

/* How long the watchdog may sleep, in ms (-1: until woken): until the
 * earliest moment a line can be due. A loop in an unreported stall: its
 * start + threshold + grace. Any other running loop: a stall that began
 * right after its last heartbeat would be due at heartbeat + resolution +
 * threshold + grace, so a loop that keeps answering moves that moment on
 * and an idle process wakes a few times a second, not every 25 ms. mutex
 * held. */
static int watch_timeout_ms(lw_status *s)
{
    int64_t now = lw_loop_now_ns(), earliest = INT64_MAX, wait_ns;
    int i;
    if (s->stall_fd < 0 || s->nloops == 0)
        return -1;
    for (i = 0; i < s->nloops; i++) {
        status_loop *l = &s->loops[i];
        lw_loop_live live;
        int64_t due;
        lw_loop_read_live(l->loop, &live);
        if (!live.running)
            continue; /* no sampler: no stall can be seen */
        if (live.paused) /* not running now; once it runs, a stall takes a threshold at least */
            due = now + live.resolution_ns + live.threshold_ns + s->stall_grace_ns;
        else if (live.in_stall && live.stall_id > l->acked_stall && live.stall_id > l->lined_stall)
            due = live.stall_started_ns + live.threshold_ns + s->stall_grace_ns;
        else if (live.in_stall) /* reported: the next stall begins after this one */
            due = now + live.resolution_ns + live.threshold_ns + s->stall_grace_ns;
        else
            due = live.heartbeat_ns + live.resolution_ns + live.threshold_ns + s->stall_grace_ns;
        if (due < earliest)
            earliest = due;
    }
    if (earliest == INT64_MAX)
        return 250; /* no sampler runs (an added loop wakes this thread; a restarted one is seen within this) */
    wait_ns = earliest - now;
    if (wait_ns < (int64_t)LW_STATUS_WATCH_MS * 1000000)
        return LW_STATUS_WATCH_MS;
    return wait_ns > 1000000000 ? 1000 : (int)((wait_ns + 999999) / 1000000);
}

static void *server_main(void *arg)
{
    lw_status *s = arg;
    sbuf doc = {0};
    int clients[LW_STATUS_MAX_BATCH];

    lw_loop_name_this_thread("lw-status");
    for (;;) {
        struct pollfd fds[2];
        int timeout, n = 0, got;
        char drain[64];

        pthread_mutex_lock(&s->mutex);
        if (s->stopping) {
            pthread_mutex_unlock(&s->mutex);
            break;
        }
        timeout = watch_timeout_ms(s);
        pthread_mutex_unlock(&s->mutex);

        fds[0].fd = s->listen_fd; /* -1 (a watchdog only): poll ignores it */
        fds[0].events = POLLIN;
        fds[1].fd = s->wake[0];
        fds[1].events = POLLIN;
        fds[0].revents = fds[1].revents = 0;
        got = poll(fds, 2, timeout);
        if (got < 0 && errno != EINTR)
            break;
        if (got > 0 && (fds[1].revents & POLLIN))
            while (read(s->wake[0], drain, sizeof drain) > 0) {
            }
        if (got > 0 && (fds[0].revents & POLLIN)) {
            while (n < LW_STATUS_MAX_BATCH) {
                int fd = accept_client(s->listen_fd);
                if (fd < 0)
                    break;
                clients[n++] = fd;
            }
            if (n > 0)
                answer(s, clients, n, &doc);
        }
        pthread_mutex_lock(&s->mutex);
        if (!s->stopping)
            watchdog(s);
        pthread_mutex_unlock(&s->mutex);
    }
    free(doc.p);
    return NULL;
}
