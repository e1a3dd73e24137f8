"""Where status sockets live, and the checks that keep them private.

One folder per user: ``$XDG_RUNTIME_DIR/loopwatch/`` when that variable is
set (systemd makes it 0700 and the user's), else ``/tmp/loopwatch-<uid>/``.
The folder must be a real directory (not a symlink), owned by the user,
with no access for group or others: anything else is refused with
:class:`StatusFolderError`, because a folder another user controls could
hold a socket that impersonates a process of ours, or see our sockets.
Each process's socket is ``<pid>.sock`` in it, mode 0600.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Iterator

__all__ = [
    "StatusFolderError",
    "ensure_status_folder",
    "pid_alive",
    "remove_stale_sockets",
    "status_folder",
    "status_socket_path",
    "watched_pids",
]

# sockaddr_un.sun_path holds 104 (macOS) to 108 (Linux) bytes with its NUL.
MAX_SOCKET_PATH = 103


class StatusFolderError(RuntimeError):
    """The status folder is unsafe (not owned by this user, open to others,
    a symlink or not a directory) or cannot be made."""

    def __init__(self, *args: object) -> None:  # a signature inspect can read
        super().__init__(*args)


def status_folder() -> str:
    """The folder of this user's status sockets (not created here)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "loopwatch")
    return os.path.join("/tmp", f"loopwatch-{os.getuid()}")


def status_socket_path(pid: int | None = None) -> str:
    """The status socket of process ``pid`` (default: this one):
    ``$XDG_RUNTIME_DIR/loopwatch/<pid>.sock``, or
    ``/tmp/loopwatch-<uid>/<pid>.sock`` when XDG_RUNTIME_DIR is unset."""
    if pid is None:
        pid = os.getpid()
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"pid must be a positive int, got {pid!r}")
    return os.path.join(status_folder(), f"{pid}.sock")


def _check_folder(path: str) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise StatusFolderError(f"status folder {path} is a symlink; refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise StatusFolderError(f"status folder {path} is not a directory")
    if st.st_uid != os.getuid():
        raise StatusFolderError(
            f"status folder {path} is owned by uid {st.st_uid}, not by this user "
            f"(uid {os.getuid()}); refusing to use it"
        )
    if st.st_mode & 0o077:
        raise StatusFolderError(
            f"status folder {path} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0700 "
            "(no access for group or others)"
        )


def ensure_status_folder() -> str:
    """Create the status folder (0700) if needed and check it is safe.

    Raises:
        StatusFolderError: it exists but is unsafe, or cannot be created.
    """
    path = status_folder()
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StatusFolderError(f"cannot create status folder {path}: {exc}") from exc
    _check_folder(path)
    return path


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (of any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watched_pids() -> Iterator[int]:
    """The pids that have a socket in this user's status folder, in order
    (the folder is checked first; none when it does not exist)."""
    path = status_folder()
    try:
        _check_folder(path)
        names = os.listdir(path)
    except FileNotFoundError:
        return
    pids = sorted(int(n[:-5]) for n in names if n.endswith(".sock") and n[:-5].isdigit())
    yield from pids


def remove_stale_sockets() -> list[int]:
    """Remove the sockets of processes that no longer exist; returns their
    pids. A socket whose process lives is left alone even if it does not
    answer (it may be busy)."""
    removed = []
    for pid in list(watched_pids()):
        if pid_alive(pid):
            continue
        try:
            os.unlink(status_socket_path(pid))
            removed.append(pid)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
    return removed
