"""How a process that hosts the front runs: uvloop, glibc's allocator told to keep memory, the
cyclic garbage collector's full passes kept rare and short, and Linux's batch scheduling.

Each was measured (docs/performance.md):

* The allocator, with the proxy benchmark on 500 KB responses through the front. Each read from
  a socket becomes a new ``bytes`` of up to 256 KB (uvloop's read size), which glibc serves
  from the heap top and hands back on free; once the free top passes the trim threshold (which
  glibc raises only as far as the largest chunk freed so far) it shrinks the heap with ``brk``,
  and the next read grows it again, faulting in and zeroing fresh pages. ``strace -c`` counted
  1.5 ``brk`` per read; fixing the thresholds removed every one of them and doubled the front's
  throughput (893 -> 2,061 req/s of 500 KB, same machine, same minute). The cost is at most
  ``_TRIM_THRESHOLD`` of freed heap kept mapped.
* The collector, with bench/scale.py: at 10,000 containers a replica's full collections took
  0.22-0.35 s, several times a minute, and blocked the event loop (every proxied request, every
  poll) while they ran, and polls were read 0.2-0.3 s late. What start-up built (modules, the
  app: about 200,000 objects) is frozen out of every pass, and the youngest generation is
  collected every ``_YOUNG_THRESHOLD`` allocations instead of Python's 700, so that a poll's or
  a request's short-lived objects die before they are promoted: the oldest generation grows
  slowly and a full pass is rare (none in 30 s of bench/scale.py against one every few
  seconds). Cycles made after start-up are still collected, only later.
* Batch scheduling (setting ``front_scheduling``), with bench/proxy_sched.py and the proxy
  benchmark at two front workers: under ``SCHED_BATCH`` a front process woken by a packet
  does not preempt the task running on its CPU (on a busy host: the container that sent the
  packet, the other front process, the client) but runs at the next scheduling point, and then
  serves every connection that became ready meanwhile. Fewer, fuller wake-ups: about 1.15x the
  requests per second of small GETs at 0.89x the CPU per request, with lower p50 and p99
  latency, on a saturated box. Its price is latency when every core is busy with work that
  does not sleep: a front process may wait for the end of the running task's slice (a few
  ms) instead of taking the CPU at once. It is not a priority: nice value and CPU share stay.
  Threads and child processes inherit the policy, so what the API starts for tenants does not
  keep it: the agent sets the default policy for itself first thing (zlh.agent.app), and the
  lxc backend starts containers under ``chrt --other``.
* uvloop instead of asyncio's default loop: the bench has always measured the front on uvloop,
  so ``zlh up`` runs on what was measured.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["Scheduling", "keep_heap_memory", "run", "schedule_as_batch", "tune_collector"]

T = TypeVar("T")
# The front processes' Linux scheduling policy (setting front_scheduling): "normal" keeps the
# one the process was started with.
Scheduling = Literal["batch", "normal"]

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Read buffers (256 KB) stay below the mmap threshold and the heap keeps up to 4 MB free.
_MMAP_THRESHOLD = 1024 * 1024
_TRIM_THRESHOLD = 4 * 1024 * 1024
# Allocations (net of frees) between two collections of the youngest generation.
_YOUNG_THRESHOLD = 10_000


def keep_heap_memory() -> bool:
    """Tell glibc's malloc not to give freed heap back at once; False where it is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        log.info("not glibc: the allocator keeps its defaults")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )


def tune_collector() -> None:
    """Freeze what the process built so far out of the collector's passes, after collecting
    its garbage; collect the youngest generation every ``_YOUNG_THRESHOLD`` allocations."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, middle, oldest)


def schedule_as_batch() -> None:
    """Put this thread (and the threads and processes it starts from now on) under Linux's
    ``SCHED_BATCH``; where the system does not allow it, say so and keep the policy."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError) as exc:  # not Linux, or refused (seccomp, a sandbox)
        log.info("batch scheduling not available (%s): the default policy stays", exc)


def run(main: Coroutine[Any, Any, T], *, scheduling: Scheduling = "normal") -> T:
    """Run ``main`` as the front's process: allocator and collector tuned, on uvloop, under
    ``scheduling``."""
    import uvloop

    keep_heap_memory()
    tune_collector()
    if scheduling == "batch":
        schedule_as_batch()
    return uvloop.run(main)
