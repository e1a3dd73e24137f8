# cython: language_level=3, boundscheck=False, wraparound=False
"""Native status core: a thin binding over ext/status/lw_status.c, the
server thread that answers on the status socket without the GIL. The
document, the socket and everything else are in status/server.py;
status/twin.py is the pure-Python twin."""

from libc.stdint cimport int64_t
from libc.string cimport strlen

import os

__all__ = ["StatusCore"]


cdef extern from "lw_loop.h" nogil:
    ctypedef struct lw_loop:
        pass

cdef extern from "lw_status.h" nogil:
    ctypedef struct lw_status:
        pass
    ctypedef void (*lw_status_stack_fn)(int fd, void *thread_state)
    lw_status *lw_status_new(int listen_fd, int scratch_fd, int64_t fresh_wait_ns)
    void lw_status_free(lw_status *s)
    int lw_status_start(lw_status *s)
    void lw_status_stop(lw_status *s)
    void lw_status_after_fork_child(lw_status *s)
    void lw_status_set_stack_dumper(lw_status *s, lw_status_stack_fn fn)
    void lw_status_set_stall_lines(lw_status *s, int fd, int64_t grace_ns, int pid)
    int lw_status_wait_request(lw_status *s, int64_t timeout_ns)
    int lw_status_publish(lw_status *s, const char *json, size_t length)
    int lw_status_add_loop(lw_status *s, int64_t id, const lw_loop *loop, void *thread_state,
                           const char *name, const char *line_prefix)
    void lw_status_remove_loop(lw_status *s, int64_t id)
    ctypedef size_t (*lw_status_sessions_fn)(void *table, char *buf, size_t cap, size_t max_stuck,
                                            double now)
    int lw_status_add_sessions(lw_status *s, int64_t id, void *table, lw_status_sessions_fn write)
    void lw_status_remove_sessions(lw_status *s, int64_t id)
    void lw_status_ack_stall(lw_status *s, int64_t id, int64_t stall_id)
    int64_t lw_status_served(const lw_status *s)
    int64_t lw_status_stall_lines(const lw_status *s)

cdef extern from "Python.h":
    ctypedef struct PyThreadState:
        pass
    PyThreadState *PyThreadState_Get()

cdef extern from "<dlfcn.h>" nogil:
    void *dlsym(void *handle, const char *symbol)
    void *RTLD_DEFAULT

# CPython's faulthandler dumps a thread's stack with this function from its
# watchdog thread, without the GIL. It is exported by CPython 3.11 and 3.12;
# 3.13 no longer exports it (an internal symbol), and then the stack of a
# stall in native code is reported as unavailable.
cdef lw_status_stack_fn _dumper = <lw_status_stack_fn>dlsym(RTLD_DEFAULT, "_Py_DumpTraceback")


cdef class StatusCore:
    # The constructor's text signature (inspect.signature cannot see __cinit__).
    """StatusCore(listen_fd, scratch_fd, fresh_wait)
--

The native server thread over a listening socket (see lw_status.h)."""

    cdef lw_status *_s
    cdef dict _keep  # loop id -> the monitor core whose lw_loop is registered
    cdef dict _keep_sessions  # registry id -> the registry whose table is registered

    def __cinit__(self, int listen_fd, int scratch_fd, double fresh_wait):
        self._keep = {}
        self._keep_sessions = {}
        self._s = lw_status_new(listen_fd, scratch_fd, <int64_t>(fresh_wait * 1e9))
        if self._s is NULL:
            raise MemoryError()
        lw_status_set_stack_dumper(self._s, _dumper)

    def __dealloc__(self):
        if self._s is not NULL:
            with nogil:
                lw_status_free(self._s)
            self._s = NULL

    served_by = "native"

    @staticmethod
    def current_thread_state():
        """The calling thread's PyThreadState, as an address (call it in
        the loop thread). Handed to the dumper only while that thread is
        stalled and no Python code runs."""
        return <size_t>PyThreadState_Get()

    @staticmethod
    def stack_dumper_available():
        """Whether this CPython lets a thread without the GIL read the loop
        thread's stack (``_Py_DumpTraceback``, as faulthandler does)."""
        return _dumper is not NULL

    def close(self):
        """Stop, and close the socket and scratch file."""
        if self._s is not NULL:
            with nogil:
                lw_status_free(self._s)
            self._s = NULL

    cdef int _check(self) except -1:
        if self._s is NULL:
            raise ValueError("the status core is closed")
        return 0

    def start(self):
        self._check()
        cdef int err = lw_status_start(self._s)
        if err != 0:
            raise OSError(err, os.strerror(err))

    def stop(self):
        if self._s is NULL:
            return
        with nogil:
            lw_status_stop(self._s)

    def after_fork_child(self):
        if self._s is NULL:
            return
        lw_status_after_fork_child(self._s)
        self._keep.clear()

    def set_stall_lines(self, int fd, double grace):
        self._check()
        lw_status_set_stall_lines(self._s, fd, <int64_t>(grace * 1e9), os.getpid())

    def wait_request(self, timeout):
        """1: a client waits for a fresh document; 0: timeout; -1: stopped.
        Waits without the GIL."""
        cdef int64_t t = -1 if timeout is None else <int64_t>(timeout * 1e9)
        cdef int got
        if self._s is NULL:
            return -1
        with nogil:
            got = lw_status_wait_request(self._s, t)
        return got

    def publish(self, bytes document not None):
        self._check()
        cdef const char *p = document
        cdef size_t n = len(document)
        cdef int err
        with nogil:
            err = lw_status_publish(self._s, p, n)
        if err != 0:
            raise ValueError("a status document must be a JSON object") if err == 22 \
                else MemoryError()

    def add_loop(self, int64_t loop_id, core, size_t thread_state, str name,
                 str line_prefix=""):
        """Serve the live figures of a native monitor's sampler. `core` is
        kept alive until remove_loop; the watchdog's line for it starts with
        `line_prefix` (see lw_status_add_loop)."""
        self._check()
        cdef size_t address = core._address()
        cdef bytes raw = name.encode("utf-8", "backslashreplace")
        cdef bytes raw_prefix = line_prefix.encode("utf-8", "backslashreplace")
        cdef int err = lw_status_add_loop(self._s, loop_id, <const lw_loop *>address,
                                          <void *>thread_state, raw, raw_prefix)
        if err != 0:
            raise OSError(err, os.strerror(err))
        self._keep[loop_id] = core

    def remove_loop(self, int64_t loop_id):
        if self._s is NULL:
            return
        with nogil:
            lw_status_remove_loop(self._s, loop_id)
        self._keep.pop(loop_id, None)

    def add_sessions(self, int64_t registry_id, registry):
        """Serve a native SessionRegistry's table live (counts, stuck
        sessions) when no Python code can run; the registry is kept alive
        until remove_sessions. TypeError for a registry without a native
        table (the pure twin's)."""
        self._check()
        writer = getattr(registry, "_status_writer", None)
        addresses = writer() if writer is not None else None
        if addresses is None:
            raise TypeError("this registry has no native table to serve")
        cdef size_t fn = addresses[0], table = addresses[1]
        cdef int err = lw_status_add_sessions(self._s, registry_id, <void *>table,
                                              <lw_status_sessions_fn>fn)
        if err != 0:
            raise OSError(err, os.strerror(err))
        self._keep_sessions[registry_id] = registry

    def remove_sessions(self, int64_t registry_id):
        if self._s is NULL:
            return
        with nogil:
            lw_status_remove_sessions(self._s, registry_id)
        self._keep_sessions.pop(registry_id, None)

    def ack_stall(self, int64_t loop_id, int64_t stall_id):
        if self._s is NULL:
            return
        lw_status_ack_stall(self._s, loop_id, stall_id)

    @property
    def served(self):
        if self._s is NULL:
            return 0
        return lw_status_served(self._s)

    @property
    def stall_lines(self):
        if self._s is NULL:
            return 0
        return lw_status_stall_lines(self._s)
