# The native Histogram, cimportable by other loopwatch extensions (the loop
# sampler records into `_h` from its own thread, without the GIL).
from loopwatch.hdr.lw_hdr cimport lw_hdr

cdef class Histogram:
    cdef lw_hdr *_h
