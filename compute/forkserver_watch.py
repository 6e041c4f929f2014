"""Imported in multiprocessing's forkserver (the process that forks the local pool's workers) before it
forks any: a thread there waits for the service process to exit, however it exits, then kills the workers
and the forkserver.

Without it a service killed with SIGKILL left its forkserver and workers behind for good: every worker holds
the forkserver's "alive" pipe open and waits on its task queue, and the forkserver waits for the pipe. A
worker stopped by the control tick (compute.pause_for_tick) could not even do that. A stopped process runs
no thread of its own, so the watch is in the forkserver, which is never stopped, and the workers are killed
with SIGKILL, which a stopped process does not block.

It watches only where the service asked for it: the service names its own pid in WATCH_ENV before the
forkserver starts, and the forkserver's parent is the service. Imported anywhere else (the service itself,
a test), it does nothing."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from pathlib import Path

WATCH_ENV = "PREWARM_FORKSERVER_OWNER"


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command (state first, then the parent's pid, ...), or None
    once the process is gone. The command, in parentheses, may hold spaces and parentheses of its own."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _parent_of(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def _kill_children() -> None:
    """SIGKILL every child of this process, each through a pidfd opened while it was still this process's
    child (so a pid another process has taken since is never signalled)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or _parent_of(int(entry)) != me:
            continue
        try:
            fd = os.pidfd_open(int(entry))
        except OSError:
            continue
        try:
            if _parent_of(int(entry)) == me:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
        finally:
            os.close(fd)


def _watch(owner_fd: int) -> None:
    select.select([owner_fd], [], [])  # a pidfd is readable once its process has exited
    _kill_children()
    os._exit(0)


def _start() -> None:
    owner = os.environ.get(WATCH_ENV, "")
    if not owner.isdigit() or int(owner) != os.getppid() or not hasattr(os, "pidfd_open"):
        return
    try:
        fd = os.pidfd_open(int(owner))
    except OSError:
        return
    if os.getppid() != int(owner):  # the owner exited before the open: the pid may be another's now
        os.close(fd)
        _kill_children()
        os._exit(0)
    threading.Thread(target=_watch, args=(fd,), daemon=True, name="prewarm-owner-watch").start()


_start()
