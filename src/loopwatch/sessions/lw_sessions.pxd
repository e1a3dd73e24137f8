# Declarations of ext/sessions/lw_sessions.h for the Cython binding.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "lw_slots.h" nogil:
    ctypedef struct lw_slot_links:
        uint32_t next
        uint32_t prev
        uint16_t slot
        uint8_t tag[2]

# The eq callback runs Python code (an id's __eq__): it needs the GIL.
cdef extern from "lw_sessions.h":
    ctypedef int (*lw_sessions_eq)(void *stored_id, void *probe_id, uint32_t stored_index,
                                   void *ctx) noexcept

cdef extern from "lw_sessions.h" nogil:
    enum:
        LW_SESS_STUCK
        LW_SESS_ASKING
        LW_SESS_TASK
        LW_SESSIONS_OK
        LW_SESSIONS_EXISTS
        LW_SESSIONS_FULL
        LW_SESSIONS_ENOMEM
        LW_SESSIONS_EQERR
        LW_SESSIONS_EV_STUCK
        LW_SESSIONS_EV_RECOVERED
        LW_SESSIONS_EV_EVICTED
        LW_SESSIONS_EV_ASK
        LW_SESSIONS_GHOST
        LW_SESSIONS_STUCK_TOO_LONG
        LW_SESSIONS_IDLE_TIMEOUT
    uint32_t LW_SESSIONS_MAX
    uint32_t LW_SESSIONS_NIL

    ctypedef struct lw_sess:
        void *id
        void *key
        double opened_at
        double state_since
        double last_progress
        lw_slot_links links
        uint32_t hash
        uint32_t gen
        int32_t queue_depth

    ctypedef struct lw_sessions_config:
        double stuck_after
        double report_backoff
        double max_report_interval
        double evict_after
        double idle_timeout
        uint32_t max_sessions
        int has_store

    ctypedef struct lw_sessions_reading:
        double raw
        double sv
        uint64_t token
        int sv_ok

    ctypedef struct lw_sessions_event:
        int kind
        int reason
        uint32_t index
        uint32_t gen
        void *id
        void *key
        int state
        int stuck
        int has_task
        int32_t queue_depth
        int64_t view_reports
        int64_t reports
        double opened_at
        double state_since
        double last_progress
        double at
        double age
        double next_report_at

    ctypedef struct lw_sessions:
        pass

    ctypedef int64_t (*lw_sessions_stall_fn)(const void *ctx, int64_t now_ns)
    void lw_sessions_set_time_source(lw_sessions *t, int clock_native, lw_sessions_stall_fn stall_fn,
                                     const void *stall_ctx, int python_stall)
    int lw_sessions_read_native(const lw_sessions *t, lw_sessions_reading *r)

    lw_sessions *lw_sessions_new(const lw_sessions_config *cfg, double start)
    void lw_sessions_free(lw_sessions *t)
    void lw_sessions_lock(lw_sessions *t, unsigned long owner)
    int lw_sessions_trylock(lw_sessions *t, unsigned long owner)
    unsigned long lw_sessions_owner(const lw_sessions *t)
    void lw_sessions_unlock(lw_sessions *t)
    void lw_sessions_after_fork_child(lw_sessions *t)

    double lw_sessions_now(lw_sessions *t, const lw_sessions_reading *r)
    void lw_sessions_set_stall(lw_sessions *t, uint64_t token, int first_ok, double first)
    int lw_sessions_stall_last(const lw_sessions *t, double *out)
    double lw_sessions_latest(const lw_sessions *t)

    lw_sess *lw_sessions_record(const lw_sessions *t, uint32_t index)
    lw_sess *lw_sessions_get(const lw_sessions *t, uint32_t index, uint32_t gen)
    int lw_sessions_find(lw_sessions *t, void *id, uint32_t hash, lw_sessions_eq eq, void *ctx,
                         uint32_t *index)
    int lw_sessions_open(lw_sessions *t, void *id, void *key, uint32_t hash, int state,
                         const lw_sessions_reading *r, lw_sessions_eq eq, void *ctx, uint32_t *index)
    int lw_sessions_progress(lw_sessions *t, uint32_t index, const lw_sessions_reading *r,
                             lw_sessions_event *recovered)
    int lw_sessions_set_state(lw_sessions *t, uint32_t index, int state, int depth_given,
                              int32_t depth, const lw_sessions_reading *r,
                              lw_sessions_event *recovered)
    void lw_sessions_snapshot(const lw_sessions *t, uint32_t index, lw_sessions_event *out)
    void lw_sessions_remove(lw_sessions *t, uint32_t index, void **id, void **key)
    void lw_sessions_set_task_flag(lw_sessions *t, uint32_t index, int has_task)

    int lw_sessions_collect(lw_sessions *t, const lw_sessions_reading *r, double *now,
                            const lw_sessions_event **events, size_t *count)
    int lw_sessions_settle(lw_sessions *t, uint32_t index, uint32_t gen, int present, double now,
                           lw_sessions_event *out)
    int lw_sessions_next_wake(const lw_sessions *t, double *out)
    void lw_sessions_unask(lw_sessions *t, uint32_t index, uint32_t gen)

    size_t lw_sessions_len(const lw_sessions *t)
    int64_t lw_sessions_count(const lw_sessions *t, int state)
    int64_t lw_sessions_queued(const lw_sessions *t)
    uint32_t lw_sessions_next(const lw_sessions *t, uint32_t start)
    size_t lw_sessions_stuck_count(const lw_sessions *t)
    uint32_t lw_sessions_stuck_at(const lw_sessions *t, size_t i)
    int lw_sessions_set_stuck_text(lw_sessions *t, uint32_t index, const char *text, size_t len)
    size_t lw_sessions_filed(const lw_sessions *t)
    uint64_t lw_sessions_examined(const lw_sessions *t)
    double lw_sessions_wheel_time(const lw_sessions *t)
    size_t lw_sessions_memory(const lw_sessions *t)
    size_t lw_sessions_write_live(lw_sessions *t, char *buf, size_t cap, size_t max_stuck, double now)
