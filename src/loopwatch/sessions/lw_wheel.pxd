# Declarations of ext/wheel/lw_wheel.h for the Cython bindings.
from libc.stdint cimport uint32_t, uint64_t

cdef extern from "lw_wheel.h" nogil:
    ctypedef struct lw_wheel:
        pass
    ctypedef enum lw_wheel_status:
        LW_WHEEL_OK
        LW_WHEEL_EINVAL
        LW_WHEEL_ERANGE
        LW_WHEEL_ENOMEM
    ctypedef struct lw_wheel_due:
        double deadline
        uint64_t seq
        uint32_t handle

    double LW_WHEEL_MIN_RESOLUTION
    double LW_WHEEL_MAX_RESOLUTION

    lw_wheel_status lw_wheel_new(double resolution, double start, lw_wheel **out)
    void lw_wheel_free(lw_wheel *w)
    void lw_wheel_clear(lw_wheel *w)
    double lw_wheel_resolution(const lw_wheel *w)
    int lw_wheel_levels(const lw_wheel *w)
    double lw_wheel_horizon(const lw_wheel *w)
    double lw_wheel_time(const lw_wheel *w)
    size_t lw_wheel_len(const lw_wheel *w)
    size_t lw_wheel_memory(const lw_wheel *w)
    size_t lw_wheel_node_size()
    lw_wheel_status lw_wheel_check(const lw_wheel *w, double deadline)
    lw_wheel_status lw_wheel_insert(lw_wheel *w, double deadline, uint32_t *handle)
    lw_wheel_status lw_wheel_move(lw_wheel *w, uint32_t handle, double deadline)
    void lw_wheel_remove(lw_wheel *w, uint32_t handle)
    int lw_wheel_is_live(const lw_wheel *w, uint32_t handle)
    double lw_wheel_deadline(const lw_wheel *w, uint32_t handle)
    int lw_wheel_next_deadline(const lw_wheel *w, double *out)
    lw_wheel_status lw_wheel_expire(lw_wheel *w, double now, const lw_wheel_due **due,
                                    size_t *count)
