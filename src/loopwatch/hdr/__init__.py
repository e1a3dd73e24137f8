"""HDR histograms: the native binding (``native``, over ``ext/hdr/``), its
pure-Python twin (``twin``), and what both share (``layout``: configuration
checks and bucket geometry; ``codec``: HdrHistogram V2 framing).

Internal: the public class is :class:`loopwatch.Histogram`, picked by
:mod:`loopwatch._selector`. Imports nothing above it in the package.
"""
