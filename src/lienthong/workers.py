"""Worker process pools whose workers die with the process that started them.

A worker of :class:`concurrent.futures.ProcessPoolExecutor` outlives its parent when the
parent is killed outright (``SIGKILL``, the out-of-memory killer): nothing tells it, and
it goes on holding memory and, for an import, a database connection's worth of work.
Every pool lienthong starts is made here, and each worker, before anything else:

* asks the Linux kernel to send it ``SIGKILL`` when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``, through ``ctypes``; the standard library has no call
  for it), and
* runs a watchdog thread that ends the process once its parent pid is no longer the one
  that started it (re-parenting to init or a subreaper), for systems without ``prctl``
  and as a second line should the signal be missed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL = 0.5  # seconds between two looks at the parent pid


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies; False where
    that is not available (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)  # the parent is gone: nobody will read what this worker makes
        time.sleep(WATCH_INTERVAL)


def tie_to_parent(parent: int) -> None:
    """Make this (worker) process end when ``parent`` does."""
    set_parent_death_signal()
    if os.getppid() != parent:
        os._exit(1)  # died before the signal was asked for
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _init(parent: int, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    tie_to_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def worker_pool(
    max_workers: int,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
) -> ProcessPoolExecutor:
    """A process pool whose workers die with this process, then run ``initializer``."""
    return ProcessPoolExecutor(
        max_workers, initializer=_init, initargs=(os.getpid(), initializer, initargs)
    )
