"""Asking a process for its status: connect, read one JSON document, done."""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from typing import Any

from .paths import pid_alive, status_socket_path, watched_pids

__all__ = ["StatusUnavailable", "query_status"]

_MAX_DOCUMENT = 16 * 1024 * 1024


class StatusUnavailable(RuntimeError):
    """A process did not answer its status socket: no socket, nobody
    listening, a timeout, or a document that is not JSON.

    Attributes:
        pid: the process asked.
        reason: ``"no_socket"``, ``"refused"``, ``"timeout"``, ``"bad_document"``.
        stale: the socket was left by a process that no longer serves it
            (and was removed).
    """

    def __init__(self, pid: int, reason: str, message: str, stale: bool = False) -> None:
        super().__init__(message)
        self.pid = pid
        self.reason = reason
        self.stale = stale


def query_status(pid: int | None = None, timeout: float = 2.0, *,
                 path: str | None = None) -> dict[str, Any]:
    """The status document of process ``pid`` (default: this one).

    The whole exchange (connect and read) is bounded by ``timeout``
    seconds. A socket nobody listens on, whose process is gone or has
    stopped serving it, is removed.

    Raises:
        StatusUnavailable: see its ``reason``.
        ValueError: a bad pid or timeout.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if path is None:
        path = status_socket_path(pid)
    if pid is None:
        pid = os.getpid()
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise StatusUnavailable(pid, "no_socket", f"process {pid} serves no status "
                                    f"(no socket at {path})") from None
        except ConnectionRefusedError:
            stale = _remove_if_stale(pid, path)
            raise StatusUnavailable(pid, "refused", f"process {pid} does not serve status "
                                    f"({'stale socket removed' if stale else 'refused'})",
                                    stale=stale) from None
        except socket.timeout:
            raise StatusUnavailable(pid, "timeout", _timeout_message(pid, timeout)) from None
        chunks, size = [], 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StatusUnavailable(pid, "timeout", _timeout_message(pid, timeout))
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise StatusUnavailable(pid, "timeout", _timeout_message(pid, timeout)) from None
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                    break
                raise
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_DOCUMENT:
                raise StatusUnavailable(pid, "bad_document", f"process {pid}: document too large")
    finally:
        sock.close()
    try:
        doc = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise StatusUnavailable(pid, "bad_document",
                                f"process {pid} answered with invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise StatusUnavailable(pid, "bad_document", f"process {pid}: not a JSON object")
    return doc


def _timeout_message(pid: int, timeout: float) -> str:
    return f"process {pid} did not answer within {timeout:g} s"


def _remove_if_stale(pid: int, path: str) -> bool:
    """Nobody listens: the socket is stale if its process is gone. (A live
    process that reused the pid replaces the socket when it serves status.)"""
    if pid_alive(pid):
        return False
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


def watched_processes() -> list[int]:
    """The pids with a status socket in this user's folder."""
    return list(watched_pids())
