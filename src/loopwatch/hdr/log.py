"""HdrHistogram interval logs (``.hlog``): one histogram per interval of
time, readable by HdrHistogram's tools (``HistogramLogProcessor``,
HdrHistogram_c's ``hdr_log_read``, the ``hdrhistogram`` package's
``HistogramLogReader``, HdrHistogram plotters).

The format, as HdrHistogram (Java) 2.x writes it (log format 1.3), which
:class:`HistogramLogWriter` follows character for character::

    #[Histogram log format version 1.3]
    #[StartTime: 1700000000.123 (seconds since epoch), Tue Nov 14 22:13:20 UTC 2023]
    #[BaseTime: 1700000000.123 (seconds since epoch)]
    "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
    Tag=loop1,0.000,1.000,0.297,HISTFAAAAC...
    Tag=loop1,1.000,1.001,0.012,HISTFAAAAC...

Interval lines: ``[Tag=<tag>,]start,length,max,payload``: start and length
in seconds with 3 decimals (``%.3f``, Locale.US); max is the histogram's
largest value (its bucket's highest equivalent value) divided by
``max_value_unit_ratio``, also ``%.3f``; payload is the V2 compressed
encoding in base64 (:meth:`loopwatch.Histogram.encode`). Java's default
ratio is 1,000,000 (nanosecond values shown as milliseconds); loopwatch
records microseconds, and ``loopwatch run --hlog`` passes 1000, so its
``Interval_Max`` column is in milliseconds too.

Where the other writers differ (the reader takes all of them):

* the ``hdrhistogram`` package (format 1.2) writes ``%f`` (6 decimals) and
  divides the max with floor division (``max // ratio``: ``0.000000`` for a
  max below the ratio), and its ``StartTime`` line cannot be written (its
  ``output_start_time`` calls a ``datetime`` method that does not exist);
* HdrHistogram_c (format 1.2/1.3) writes the interval's *end* time in the
  second field, the max unscaled as ``%d.0``, and an
  ``"EndTimestamp"`` legend, and no ``BaseTime``;
* HdrHistogram (Java) and loopwatch: ``%.3f`` everywhere, as above.

:class:`HistogramLogReader` skips comment lines (``#...``), legend lines
(``"...``) and blank lines; reads ``StartTime``/``BaseTime`` wherever they
appear; takes 3 or 6 decimals and integers; reads the second field as an
end time when the legend said ``"EndTimestamp"``; and gives each interval's
start as an absolute time when the log says how (Java's rule: add
``BaseTime``; without one, a first timestamp more than a year before
``StartTime`` means times are relative to ``StartTime``).
"""

from __future__ import annotations

import math
import os
import re
import time
from typing import IO, Any, Iterator, NamedTuple

__all__ = ["FORMAT_VERSION", "HistogramLogReader", "HistogramLogWriter", "LogInterval"]

#: The log format version written (HdrHistogram Java 2.x's).
FORMAT_VERSION = "1.3"
LEGEND = '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"'
_BAD_TAG = re.compile(r"[,\s\x00-\x1f\x7f]")
_START_TIME = re.compile(r"#\[StartTime:\s*([-+0-9.eE]+)")
_BASE_TIME = re.compile(r"#\[BaseTime:\s*([-+0-9.eE]+)")
_VERSION = re.compile(r"#\[Histogram log format version\s*([0-9.]+)\]")
_YEAR = 365 * 24 * 3600.0


def _default_histogram_class() -> Any:
    from .._selector import Histogram

    return Histogram


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return seconds


class HistogramLogWriter:
    """Writes an HdrHistogram interval log (format 1.3, as HdrHistogram Java
    writes it) to a text file.

    Args:
        output: a text file object (written with ``write``; flushed after
            each line when ``flush`` is true) or a path, opened for writing
            (UTF-8, truncated) and closed by :meth:`close`.
        max_value_unit_ratio: the ``Interval_Max`` column is the
            histogram's max divided by this (Java's default, 1,000,000,
            shows nanoseconds as milliseconds; pass 1000 for microseconds).
        flush: flush the file after each line (a reader following the file,
            ``tail -f``, sees every interval as soon as it is written).

    Typical use::

        with HistogramLogWriter("lag.hlog", max_value_unit_ratio=1000.0) as log:
            t0 = time.time()
            log.write_header(start_time=t0, base_time=t0)
            log.output_interval_histogram(hist, 0.0, 1.0, tag="loop1")

    Interval times are written as given (Java's explicit form): pass times
    relative to the base time when one was written, absolute ones when not.
    Not thread-safe: one writer thread (``loopwatch run --hlog`` has one).
    """

    def __init__(self, output: str | os.PathLike[str] | IO[str], *,
                 max_value_unit_ratio: float = 1_000_000.0, flush: bool = False) -> None:
        ratio = _finite("max_value_unit_ratio", max_value_unit_ratio)
        if ratio <= 0:
            raise ValueError(f"max_value_unit_ratio must be > 0, got {max_value_unit_ratio!r}")
        self.max_value_unit_ratio = ratio
        self._flush = bool(flush)
        if isinstance(output, (str, os.PathLike)):
            self._file: IO[str] = open(output, "w", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        elif callable(getattr(output, "write", None)):
            self._file = output
            self._owned = False
        else:
            raise TypeError("output must be a path or a text file object")

    @property
    def file(self) -> IO[str]:
        """The file written to."""
        return self._file

    def _write(self, line: str) -> None:
        self._file.write(line)
        if self._flush:
            self._file.flush()

    def output_comment(self, comment: str) -> None:
        """``#<comment>``; a comment may not contain a line break."""
        if not isinstance(comment, str):
            raise TypeError("comment must be a str")
        if "\n" in comment or "\r" in comment:
            raise ValueError("a comment cannot contain line breaks")
        self._write(f"#{comment}\n")

    def output_log_format_version(self) -> None:
        """``#[Histogram log format version 1.3]``."""
        self.output_comment(f"[Histogram log format version {FORMAT_VERSION}]")

    def output_start_time(self, start_time: float) -> None:
        """``#[StartTime: <seconds since epoch> (seconds since epoch), <date>]``,
        the date as Java's ``Date.toString()`` writes it, in local time."""
        start_time = _finite("start_time", start_time)
        date = time.strftime("%a %b %d %H:%M:%S %Z %Y", time.localtime(start_time))
        self._write(f"#[StartTime: {start_time:.3f} (seconds since epoch), {date}]\n")

    def output_base_time(self, base_time: float) -> None:
        """``#[BaseTime: <seconds since epoch> (seconds since epoch)]``: the
        time interval start times are relative to."""
        base_time = _finite("base_time", base_time)
        self._write(f"#[BaseTime: {base_time:.3f} (seconds since epoch)]\n")

    def output_legend(self) -> None:
        """The column legend line."""
        self._write(LEGEND + "\n")

    def write_header(self, start_time: float | None = None, base_time: float | None = None,
                     comment: str | None = None) -> None:
        """The usual header: an optional comment, the format version, the
        start time (default: now), an optional base time, the legend."""
        if comment is not None:
            self.output_comment(comment)
        self.output_log_format_version()
        self.output_start_time(time.time() if start_time is None else start_time)
        if base_time is not None:
            self.output_base_time(base_time)
        self.output_legend()

    def output_interval_histogram(self, histogram: Any, start: float, end: float, *,
                                  tag: str | None = None,
                                  max_value_unit_ratio: float | None = None) -> None:
        """One interval line: ``[Tag=<tag>,]start,end - start,max/ratio,<V2 base64>``.

        Args:
            histogram: a :class:`loopwatch.Histogram` (anything with
                ``encode()`` and ``max``).
            start, end: the interval, seconds (written as given).
            tag: an optional tag; no commas, whitespace or control
                characters (Java refuses them too).
            max_value_unit_ratio: this line's ratio (default: the writer's).
        """
        start = _finite("start", start)
        end = _finite("end", end)
        ratio = self.max_value_unit_ratio if max_value_unit_ratio is None else \
            _finite("max_value_unit_ratio", max_value_unit_ratio)
        if ratio <= 0:
            raise ValueError(f"max_value_unit_ratio must be > 0, got {ratio!r}")
        prefix = ""
        if tag is not None:
            if not isinstance(tag, str):
                raise TypeError("tag must be a str or None")
            if not tag or _BAD_TAG.search(tag):
                raise ValueError(
                    f"tag {tag!r}: must be non-empty, without commas, whitespace or line breaks")
            prefix = f"Tag={tag},"
        payload = histogram.encode()
        if isinstance(payload, (bytes, bytearray)):
            payload = payload.decode("ascii")
        self._write(f"{prefix}{start:.3f},{end - start:.3f},{histogram.max / ratio:.3f},"
                    f"{payload}\n")

    def flush(self) -> None:
        """Flush the lines written so far to the file."""
        self._file.flush()

    def close(self) -> None:
        """Flush; close the file if the writer opened it."""
        if self._owned:
            self._file.close()
        else:
            self._file.flush()

    def __enter__(self) -> HistogramLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogInterval(NamedTuple):
    """One interval of a log.

    Attributes:
        tag: the line's tag, or None.
        start: the interval's start, seconds: absolute (since the epoch)
            when the log says how (a ``BaseTime``, or relative times and a
            ``StartTime``: see the module), else as written.
        length: the interval's length, seconds.
        histogram: the decoded histogram.
    """

    tag: str | None
    start: float
    length: float
    histogram: Any


class HistogramLogReader:
    """Reads an HdrHistogram interval log written by loopwatch, HdrHistogram
    (Java), HdrHistogram_c or the ``hdrhistogram`` package.

    Args:
        source: a path (opened as UTF-8 text, closed by :meth:`close`), a
            text file object, or an iterable of lines.
        histogram_class: the class whose ``decode()`` reads the payloads
            (default: :class:`loopwatch.Histogram`).

    Iterating yields :class:`LogInterval` ``(tag, start, length,
    histogram)`` in file order. :attr:`start_time` and :attr:`base_time` are
    the header's (None until seen; ``base_time`` is also deduced as Java
    does once the first interval is read), :attr:`format_version` the
    version line's.

    Raises (while iterating):
        ValueError: a line that is neither a comment, a legend nor an
            interval, or a payload that does not decode; the message names
            the line number.
    """

    def __init__(self, source: str | os.PathLike[str] | IO[str] | Any, *,
                 histogram_class: Any = None) -> None:
        self._histogram_class = histogram_class or _default_histogram_class()
        if isinstance(source, (str, os.PathLike)):
            self._lines: Any = open(source, encoding="utf-8")  # noqa: SIM115
            self._owned = True
        else:
            self._lines = source
            self._owned = False
        self.start_time: float | None = None
        self.base_time: float | None = None
        self.format_version: str | None = None
        self._base_time_known = False
        self._second_is_end = False

    def __iter__(self) -> Iterator[LogInterval]:
        for number, raw in enumerate(self._lines, 1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                self._header(line)
                continue
            if line.startswith('"'):
                self._second_is_end = '"EndTimestamp"' in line
                continue
            yield self._interval(line, number)

    def _header(self, line: str) -> None:
        if (m := _START_TIME.match(line)) is not None:
            self.start_time = float(m.group(1))
        elif (m := _BASE_TIME.match(line)) is not None:
            self.base_time = float(m.group(1))
            self._base_time_known = True
        elif (m := _VERSION.match(line)) is not None:
            self.format_version = m.group(1)

    def _interval(self, line: str, number: int) -> LogInterval:
        tag = None
        if line.startswith("Tag="):
            tag, sep, line = line[4:].partition(",")
            if not sep:
                raise ValueError(f"line {number}: a tag without an interval")
        fields = line.split(",")
        if len(fields) != 4:
            raise ValueError(f"line {number}: expected start,length,max,histogram; got "
                             f"{len(fields)} fields")
        try:
            start, second = float(fields[0]), float(fields[1])
            float(fields[2])  # the max: checked, not used (the histogram has it)
        except ValueError:
            raise ValueError(f"line {number}: bad number in {line[:80]!r}") from None
        # Under an "EndTimestamp" legend HdrHistogram_c's hdr_log_write puts
        # the end there, but its hdr_log_write_entry (tagged lines) writes the
        # length under the same legend: an "end" before the start is a length.
        length = second - start if self._second_is_end and second >= start else second
        try:
            histogram = self._histogram_class.decode(fields[3].strip())
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        if not self._base_time_known:
            # Java's HistogramLogReader: no BaseTime line; if the first
            # timestamp is more than a year before StartTime, times are
            # relative to StartTime, else absolute.
            if self.start_time is None:
                self.start_time = start
            self.base_time = self.start_time if start < self.start_time - _YEAR else 0.0
            self._base_time_known = True
        return LogInterval(tag, start + (self.base_time or 0.0), length, histogram)

    def close(self) -> None:
        """Close the file if the reader opened it."""
        if self._owned:
            self._lines.close()

    def __enter__(self) -> HistogramLogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

