# cython: language_level=3, boundscheck=False, wraparound=False
"""Native Histogram: a thin binding over ext/hdr/lw_hdr.c. See hdr/twin.py
for the documented behaviour; both twins answer identically."""

import sys

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint8_t, INT64_MAX

from loopwatch.hdr.lw_hdr cimport *

from loopwatch.hdr import codec as _hdr_codec
from loopwatch.hdr.layout import as_count_value, check_percentile, layout
from loopwatch.hdr.codec import PICKLE_VERSION as _PICKLE_VERSION, unpickle as _unpickle

_OVERFLOW = "histogram total count would exceed 2**63 - 1"


cdef extern from "lw_hdr_record.h":
    int64_t lw_hdr_total_count_inline(const lw_hdr *h)


cdef extern from *:
    """
    /* A non-negative int small enough to be stored in one digit (below
     * 2**30): its value without a call. Anything else (int subclasses,
     * __index__ objects, negative or larger ints) is left to the general
     * path's checks. */
    static inline int lw_small_nonneg(PyObject *o, int64_t *out) {
        if (!PyLong_CheckExact(o)) return 0;
    #if PY_VERSION_HEX >= 0x030C0000
        if (!PyUnstable_Long_IsCompact((PyLongObject *)o)) return 0;
        Py_ssize_t v = PyUnstable_Long_CompactValue((PyLongObject *)o);
        if (v < 0) return 0;
        *out = v;
        return 1;
    #else
        Py_ssize_t size = Py_SIZE(o);  /* 3.11: the signed digit count */
        if (size == 0) { *out = 0; return 1; }
        if (size != 1) return 0;
        *out = ((PyLongObject *)o)->ob_digit[0];
        return 1;
    #endif
    }

    /* Python code records under the GIL, one thread at a time: the single
     * writer of lw_hdr.h's rule. A free-threaded build has no such writer. */
    #ifdef Py_GIL_DISABLED
    #define lw_hdr_record_under_gil(h, value, count) lw_hdr_record_inline(h, value, count, 0)
    #else
    #define lw_hdr_record_under_gil(h, value, count) lw_hdr_record_inline(h, value, count, 1)
    #endif

    typedef PyObject *(*lw_fastcall_kw)(PyObject *, PyObject *const *, Py_ssize_t, PyObject *);

    /* The C function of a METH_FASTCALL | METH_KEYWORDS method descriptor
     * (a `def` of an extension type built with binding=False), or NULL for
     * any other object. */
    static lw_fastcall_kw lw_fastcall_kw_of(PyObject *descr) {
        PyMethodDef *def;
        if (!Py_IS_TYPE(descr, &PyMethodDescr_Type)) return NULL;
        def = ((PyMethodDescrObject *)descr)->d_method;
        if (def->ml_flags != (METH_FASTCALL | METH_KEYWORDS)) return NULL;
        return (lw_fastcall_kw)(void (*)(void))def->ml_meth;
    }

    /* record()'s method: its docstring starts with the text signature,
     * which inspect.signature and help() read from a method descriptor. */
    static PyMethodDef lw_record_method = {
        "record", NULL, METH_FASTCALL | METH_KEYWORDS,
        "record($self, /, value, count=1)\\n--\\n\\nRecord ``count`` occurrences of ``value``."};

    static PyObject *lw_record_descriptor(PyTypeObject *type, lw_fastcall_kw entry) {
        lw_record_method.ml_meth = (PyCFunction)(void (*)(void))entry;
        return PyDescr_NewMethod(type, &lw_record_method);
    }
    """
    bint lw_small_nonneg(PyObject *o, int64_t *out)
    int lw_hdr_record_under_gil(lw_hdr *h, int64_t value, int64_t count)
    ctypedef PyObject *(*lw_fastcall_kw)(PyObject *, PyObject *const *, Py_ssize_t, PyObject *) noexcept
    lw_fastcall_kw lw_fastcall_kw_of(object descr)
    object lw_record_descriptor(PyTypeObject *type, lw_fastcall_kw entry)
    void PyType_Modified(PyTypeObject *cls)


cdef inline int64_t _nonneg(str name, object obj, bint saturate) except -1:
    """An int argument >= 0 (layout.as_value / as_count in the twin). Past
    int64, a value or interval is taken as INT64_MAX; a count overflows the
    histogram."""
    cdef int overflow = 0
    cdef long long v
    if type(obj) is not int:
        obj = as_count_value(name, obj)
    v = PyLong_AsLongLongAndOverflow(obj, &overflow)
    if overflow > 0:
        if saturate:
            return INT64_MAX
        raise OverflowError(_OVERFLOW)
    if overflow < 0 or v < 0:
        raise ValueError(f"{name} must be >= 0, got {obj}")
    return v


cdef class Histogram:
    # The first lines are the constructor's text signature (what
    # inspect.signature and help() read for an extension type, whose
    # __cinit__ they cannot see); CPython strips them from __doc__.
    """Histogram(lowest_trackable=1, highest_trackable=3600000000, significant_figures=3)
--

An HDR histogram of non-negative integers (native implementation)."""

    def __cinit__(self, lowest_trackable=1, highest_trackable=3_600_000_000,
                  significant_figures=3):
        layout(lowest_trackable, highest_trackable, significant_figures)
        status = lw_hdr_new(lowest_trackable, highest_trackable, significant_figures, &self._h)
        if status == LW_HDR_ENOMEM:
            raise MemoryError()
        if status != LW_HDR_OK:
            raise ValueError("histogram configuration rejected by the native layout")

    def __dealloc__(self):
        if self._h is not NULL:
            lw_hdr_free(self._h)
            self._h = NULL

    @property
    def lowest_trackable(self):
        """Smallest value distinguishable from 0."""
        return lw_hdr_lowest_trackable(self._h)

    @property
    def highest_trackable(self):
        """The configured upper bound of the range (see highest_recordable)."""
        return lw_hdr_highest_trackable(self._h)

    @property
    def highest_recordable(self):
        """Largest value recorded as itself: the top of the last bucket, >= highest_trackable."""
        return lw_hdr_highest_recordable(self._h)

    @property
    def significant_figures(self):
        """Decimal digits of precision kept for every value."""
        return lw_hdr_significant_figures(self._h)

    # The general path of record(); a call with one exact small int goes
    # through _record_entry first (see _install_record_entry).
    @cython.binding(False)
    def record(self, value, count=1):
        """Record ``count`` occurrences of ``value``."""
        cdef int64_t v = _nonneg("value", value, True)
        cdef int64_t c = 1 if count is 1 else _nonneg("count", count, False)
        if c > INT64_MAX - lw_hdr_total_count(self._h):
            raise OverflowError(_OVERFLOW)
        lw_hdr_record(self._h, v, c)

    def record_corrected(self, value, expected_interval, count=1):
        """Record ``value`` with HdrHistogram's coordinated-omission correction."""
        cdef int64_t v = _nonneg("value", value, True)
        cdef int64_t interval = _nonneg("expected_interval", expected_interval, True)
        cdef int64_t c = _nonneg("count", count, False)
        missing = v // interval - 1 if interval and v > interval else 0
        if c * (missing + 1) > INT64_MAX - lw_hdr_total_count(self._h):
            raise OverflowError(_OVERFLOW)
        lw_hdr_record_corrected(self._h, v, interval, c)

    @property
    def total_count(self):
        """Number of values recorded."""
        return lw_hdr_total_count(self._h)

    @property
    def saturated_count(self):
        """How many of them were above highest_recordable (recorded as it)."""
        return lw_hdr_saturated_count(self._h)

    @property
    def min(self):
        """Lowest equivalent value of the smallest value recorded; 0 when empty."""
        return lw_hdr_min(self._h)

    @property
    def max(self):
        """Highest equivalent value of the largest value recorded; 0 when empty."""
        return lw_hdr_max(self._h)

    @property
    def mean(self):
        """Mean of the bucket midpoints, weighted by count; 0.0 when empty."""
        return lw_hdr_mean(self._h)

    @property
    def stdev(self):
        """Population standard deviation of the bucket midpoints; 0.0 when empty."""
        return lw_hdr_stdev(self._h)

    def value_at_percentile(self, percentile):
        """The value below or at which ``percentile`` % of recorded values fall."""
        cdef double p
        if type(percentile) is float or type(percentile) is int:
            p = percentile
            if 0.0 <= p <= 100.0:
                return lw_hdr_value_at_percentile(self._h, p)
        return lw_hdr_value_at_percentile(self._h, check_percentile(percentile))

    def percentiles(self, percentiles):
        """``{p: value_at_percentile(p)}`` for each p, in the order given."""
        checked = [(p, check_percentile(p)) for p in percentiles]
        return {p: lw_hdr_value_at_percentile(self._h, v) for p, v in checked}

    def count_at(self, value):
        """Count recorded in the bucket that ``value`` falls in."""
        value = as_count_value("value", value)
        highest = lw_hdr_highest_recordable(self._h)
        if not 0 <= value <= highest:
            raise ValueError(
                f"value must be between 0 and highest_recordable ({highest}), got {value}")
        return lw_hdr_count_at_value(self._h, value)

    def recorded(self):
        """Yield ``(value, count)`` for each non-empty bucket, in value order."""
        cdef int32_t i = lw_hdr_next_recorded(self._h, 0)
        while i >= 0:
            yield (lw_hdr_highest_equivalent(self._h, lw_hdr_value_at_index(self._h, i)),
                   lw_hdr_count_at_index(self._h, i))
            i = lw_hdr_next_recorded(self._h, i + 1)

    def merge(self, other):
        """Add every count of ``other`` into this histogram."""
        if not isinstance(other, Histogram):
            raise TypeError(
                f"can only merge a {type(self).__qualname__}, not {type(other).__name__}")
        if lw_hdr_add(self._h, (<Histogram>other)._h) != LW_HDR_OK:
            raise OverflowError(_OVERFLOW)

    def reset(self):
        """Forget every recorded value; the configuration stays."""
        lw_hdr_reset(self._h)

    def copy(self):
        """An independent histogram with the same configuration and counts."""
        cdef Histogram new = Histogram.__new__(
            Histogram, lw_hdr_lowest_trackable(self._h), lw_hdr_highest_trackable(self._h),
            lw_hdr_significant_figures(self._h))
        cdef lw_hdr *dup = lw_hdr_copy(self._h)
        if dup is NULL:
            raise MemoryError()
        lw_hdr_free(new._h)
        new._h = dup
        return new

    def encode(self):
        """HdrHistogram's V2 compressed encoding, base64 (``HISTF...``)."""
        cdef size_t bound = lw_hdr_encode_bound(self._h)
        cdef uint8_t *buf = <uint8_t *>PyMem_Malloc(bound if bound else 1)
        cdef size_t n
        if buf is NULL:
            raise MemoryError()
        try:
            n = lw_hdr_encode_counts(self._h, buf, bound)
            payload = PyBytes_FromStringAndSize(<char *>buf, n)
        finally:
            PyMem_Free(buf)
        return _hdr_codec.encode_frame(
            lw_hdr_lowest_trackable(self._h), lw_hdr_highest_trackable(self._h),
            lw_hdr_significant_figures(self._h), payload)

    @classmethod
    def decode(cls, data):
        """Rebuild a histogram from :meth:`encode` output or any V2 encoding."""
        frame = _hdr_codec.decode_frame(data)
        cdef Histogram hist = cls(frame.lowest_trackable, frame.highest_trackable,
                                  frame.significant_figures)
        cdef bytes payload = frame.payload
        status = lw_hdr_decode_counts(
            hist._h, <const uint8_t *>PyBytes_AS_STRING(payload), len(payload))
        if status == LW_HDR_EOVERFLOW:
            raise ValueError("encoded counts add up to more than 2**63 - 1")
        if status != LW_HDR_OK:
            raise ValueError("encoded counts are malformed or run past the histogram's buckets")
        return hist

    @classmethod
    def _restore(cls, data, saturated):
        """The histogram of an encoding plus the saturated count it could not
        carry (unpickling); ValueError if they do not fit together."""
        cdef Histogram hist = cls.decode(data)
        cdef int64_t sat = _nonneg("saturated_count", saturated, False)
        if lw_hdr_set_saturated(hist._h, sat) != LW_HDR_OK:
            raise ValueError(
                f"saturated_count {saturated} exceeds the total count {hist.total_count}")
        return hist

    def __reduce__(self):
        return (_unpickle, ("native", _PICKLE_VERSION, self.encode(),
                            lw_hdr_saturated_count(self._h)))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def __eq__(self, other):
        if not isinstance(other, Histogram):
            return NotImplemented
        cdef lw_hdr *a = self._h
        cdef lw_hdr *b = (<Histogram>other)._h
        cdef int32_t i
        if not lw_hdr_same_layout(a, b):
            return False
        if (lw_hdr_total_count(a) != lw_hdr_total_count(b)
                or lw_hdr_saturated_count(a) != lw_hdr_saturated_count(b)):
            return False
        for i in range(lw_hdr_counts_len(a)):
            if lw_hdr_count_at_index(a, i) != lw_hdr_count_at_index(b, i):
                return False
        return True

    __hash__ = None

    def __repr__(self):
        return (f"Histogram(lowest_trackable={self.lowest_trackable}, "
                f"highest_trackable={self.highest_trackable}, "
                f"significant_figures={self.significant_figures}, "
                f"total_count={self.total_count})")


# -- record(): its own entry point ---------------------------------------------
# record(v) is the hot call (one per request in a service). Cython's wrapper
# parses every call as if it could have keywords and converts each int by a
# function call, which costs more than the recording itself. This entry
# takes the calls whose arguments are small ints (value, and count given by
# position or as count=) straight to the C record, and hands every other
# call, unchanged, to that wrapper: other int types, large values, the
# overflow check's error and every other error behave exactly as the
# general path makes them.

cdef lw_fastcall_kw _record_general = NULL  # Cython's wrapper of record()
cdef object _count_keyword = sys.intern("count")  # as the compiler spells it in kwnames


cdef inline bint _small_arguments(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                                  int64_t *value, int64_t *count) noexcept:
    """record()'s arguments when they are (value), (value, count) or
    (value, count=...), each an exact int in [0, 2**30): True and both
    read. False for anything the general path must look at."""
    if kwnames == NULL:
        if nargs == 1:
            count[0] = 1
        elif nargs != 2 or not lw_small_nonneg(args[1], count):
            return False
    elif (nargs != 1 or PyTuple_GET_SIZE(<object>kwnames) != 1
          or PyTuple_GET_ITEM(<object>kwnames, 0) != <PyObject *>_count_keyword
          or not lw_small_nonneg(args[1], count)):
        return False
    return lw_small_nonneg(args[0], value)


cdef PyObject *_record_entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) noexcept:
    cdef int64_t value, count
    cdef lw_hdr *h
    if _small_arguments(args, nargs, kwnames, &value, &count):
        h = (<Histogram>self)._h
        if count <= INT64_MAX - lw_hdr_total_count_inline(h):  # else OverflowError, below
            lw_hdr_record_under_gil(h, value, count)
            Py_INCREF(None)
            return <PyObject *>None
    return _record_general(self, args, nargs, kwnames)


cdef _install_record_entry():
    """Put _record_entry in Histogram's dict as ``record``, a method
    descriptor (METH_FASTCALL | METH_KEYWORDS: the interpreter calls it
    without building a tuple, and 3.11+ specializes the call). Left as it
    is if Cython built record() with another calling convention."""
    global _record_general
    _record_general = lw_fastcall_kw_of(Histogram.__dict__["record"])
    if _record_general is NULL:
        return
    (<dict>(<PyTypeObject *>Histogram).tp_dict)["record"] = lw_record_descriptor(
        <PyTypeObject *>Histogram, _record_entry)
    PyType_Modified(<PyTypeObject *>Histogram)


_install_record_entry()

