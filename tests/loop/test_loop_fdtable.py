"""The native sampler thread leaves the process's fd table (issue 13): a
second thread sharing the table puts every fd system call of the loop on
the kernel's reference-counted path. What must hold whatever the table:
the application's fds behave as if no monitor ran (a socket it closes is
closed: its peer sees EOF, a listener stops accepting), and the sampler
holds none of them. Every case runs on both implementations and on
asyncio and uvloop (the twin's sampler is a Python thread, which shares
the table: the same guarantees must hold for it)."""

from __future__ import annotations

import ctypes
import os
import platform
import select
import socket
import sys

import pytest

from loop_support import run_for
from loopwatch._selector import load_implementation

LINUX = sys.platform.startswith("linux")


def _sampler_fds() -> dict[int, dict[int, str]]:
    """{sampler tid: {fd: link target}} of the native sampler threads."""
    found: dict[int, dict[int, str]] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                if f.read().strip() != "lw-loop-sampler":
                    continue
            fds = {}
            for fd in os.listdir(f"/proc/self/task/{task}/fd"):
                try:
                    fds[int(fd)] = os.readlink(f"/proc/self/task/{task}/fd/{fd}")
                except OSError:  # closed meanwhile
                    pass
            found[int(task)] = fds
        except OSError:  # the thread just ended
            pass
    return found


def _pidfd_getfd_works() -> bool:
    """Whether this process may take a fd of its own table with
    pidfd_getfd (Linux >= 5.6, not refused by a seccomp profile): what the
    sampler needs before it leaves the table."""
    numbers = {"x86_64": (434, 438), "aarch64": (434, 438)}.get(platform.machine())
    if not LINUX or numbers is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    pidfd = libc.syscall(ctypes.c_long(numbers[0]), ctypes.c_long(os.getpid()), ctypes.c_long(0))
    if pidfd < 0:
        return False
    try:
        r, w = os.pipe()
        try:
            got = libc.syscall(ctypes.c_long(numbers[1]), ctypes.c_long(pidfd),
                               ctypes.c_long(r), ctypes.c_long(0))
            if got < 0:
                return False
            os.close(got)
            return True
        finally:
            os.close(r)
            os.close(w)
    finally:
        os.close(pidfd)


def _assert_eof(peer: socket.socket) -> None:
    """The peer of a closed socket reads EOF (within 10 s: the event, not
    a sleep; a copy of the socket left open anywhere would block it)."""
    ready, _, _ = select.select([peer], [], [], 10)
    assert ready, "the peer never saw the socket close: a copy of it is still open"
    assert peer.recv(1) == b""


def test_sockets_closed_while_watched_are_closed(impl, loop):
    before_a, before_b = socket.socketpair()  # open when the sampler starts
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    opened: list[socket.socket] = [before_a, before_b, listener]
    try:
        with impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.1) as m:
            run_for(loop, 0.1)  # the sampler runs (and has slept with the idle loop)
            after_a, after_b = socket.socketpair()  # opened while it runs
            opened += [after_a, after_b]
            run_for(loop, 0.05)
            before_a.close()
            after_a.close()
            listener.close()
            _assert_eof(before_b)
            _assert_eof(after_b)
            # A closed listener accepts nothing (a copy of it would take the
            # connection into its backlog), and its port is free again.
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=10).close()
            again = socket.socket()
            again.bind(("127.0.0.1", port))
            again.close()
            run_for(loop, 0.05)  # the monitor still watches: it was not disturbed
            assert m.running and m.snapshot().total.sample_count > 0
    finally:
        for s in opened:
            s.close()


@pytest.mark.skipif(not LINUX, reason="a thread's own fd table: Linux (macOS shares it)")
def test_the_sampler_holds_none_of_the_applications_fds(loop, request):
    if request.config.getoption("--no-native"):
        pytest.skip("--no-native given")
    impl = load_implementation("native")  # the twin's sampler is a Python thread
    ours_a, ours_b = socket.socketpair()
    inodes = {f"socket:[{os.fstat(s.fileno()).st_ino}]" for s in (ours_a, ours_b)}
    allowed = ("anon_inode:[eventfd]", "anon_inode:[pidfd]", "anon_inode:[eventpoll]",
               "anon_inode:[io_uring]", "/proc/")

    def check(m) -> None:
        table = m._core.sampler_table()
        if not _pidfd_getfd_works():
            assert table == "shared", table  # it cannot follow the loop's epoll set
            return
        assert table == "own"
        samplers = _sampler_fds()
        assert len(samplers) == 1, samplers
        (fds,) = samplers.values()
        # Its few fds (the ping, the wake fd, the loop's epoll set and the
        # io_uring it waits on it with, the /proc file, the pidfd it takes
        # the epoll set through), none of ours; a sanitizer build keeps
        # stderr (fd 2) for its reports.
        assert not inodes & set(fds.values()), fds
        assert all(target.startswith(allowed) or fd == 2 for fd, target in fds.items()), fds
        assert len(fds) <= 7, fds

    try:
        with impl.LoopMonitor(loop, resolution=0.005, stall_threshold=0.1) as m:
            run_for(loop, 0.1)
            check(m)
            # A fork re-creates the sampler thread in the parent (joined
            # before, started after): the new one leaves the table again.
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            assert os.waitpid(pid, 0)[1] == 0
            run_for(loop, 0.1)
            check(m)
            ours_a.close()
            _assert_eof(ours_b)
    finally:
        ours_a.close()
        ours_b.close()
