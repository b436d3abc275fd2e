"""Worker processes die with the process that started them.

A pool worker or a spark-submit left running after its parent was killed (``kill -9``, OOM
killer) keeps computing for a run that is dead and may commit its outputs. On Linux the kernel
signals a child when its parent dies (``prctl(PR_SET_PDEATHSIG)``, set through ctypes: no
library wraps it for the standard library's process pools); elsewhere, and as a second line on
Linux, a watchdog thread polls the parent pid.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1   # <linux/prctl.h>


def _prctl_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, sig: int, poll_s: float) -> None:
    while True:
        threading.Event().wait(poll_s)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), sig)
            return


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGKILL, poll_s: float = 1.0) -> None:
    """Make this process receive ``sig`` when ``parent_pid`` (default: the current parent) dies.

    A process-pool ``initializer``: ``ProcessPoolExecutor(n, initializer=die_with_parent,
    initargs=(os.getpid(),))``. If the parent is already gone, ``sig`` is sent at once.
    """
    parent_pid = os.getppid() if parent_pid is None else int(parent_pid)
    _prctl_pdeathsig(sig)
    if os.getppid() != parent_pid:   # the parent died before the kernel could be told
        os.kill(os.getpid(), sig)
        return
    threading.Thread(target=_watch_parent, args=(parent_pid, sig, poll_s), name="darkhalo-parent-watchdog",
                     daemon=True).start()


def preexec_die_with_parent(sig: int = signal.SIGKILL):
    """A ``subprocess.Popen(preexec_fn=...)`` making the child receive ``sig`` when this process
    dies (Linux; elsewhere None: the child is watched by whoever reads its output)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def preexec() -> None:
        _prctl_pdeathsig(sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)
    return preexec
