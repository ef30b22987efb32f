"""The front's process keeps freed heap memory (reads of 256 KB do not fault in fresh pages),
and keeps the garbage collector's full passes, which stop its event loop, rare and short."""

from __future__ import annotations

import subprocess
import sys

# A proxy's read loop in miniature: a fresh 256 KB buffer per read, a copy of it, both freed.
_READS = """
import resource, sys
from zlh.proxy.serving import keep_heap_memory
if sys.argv[1] == "tuned":
    assert keep_heap_memory()
src = b"x" * (256 * 1024)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(500):
    data = bytearray(src)
    copy = bytes(data)
    del data, copy
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _READS, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_tuned_allocator_reuses_the_heap_instead_of_faulting_pages_per_read() -> None:
    plain, tuned = _page_faults("plain"), _page_faults("tuned")
    assert plain > 500 * 32  # glibc's defaults: the heap shrinks and regrows on every read
    assert tuned < 500  # tuned: fewer faults than reads, the pages stay mapped


# A replica in miniature: start-up's objects, one long-lived object per container of its share,
# and polls whose objects live across a few turns of the loop. Prints the full collections the
# polls caused, the objects the collector still scans, and those frozen out of its passes.
_POLLS = """
import asyncio, gc, sys
from zlh.proxy import serving
startup = [{"module": i, "names": []} for i in range(100_000)]
async def poll(n):
    held = [{"poll": n, "part": []} for _ in range(20)]
    for _ in range(3):
        await asyncio.sleep(0)
    return len(held)
async def main():
    share = [{"target": i, "status": []} for i in range(50_000)]
    before = gc.get_stats()[2]["collections"]
    for _ in range(100):
        await asyncio.gather(*(poll(n) for n in range(200)))
    full = gc.get_stats()[2]["collections"] - before
    return full, len(gc.get_objects()), gc.get_freeze_count(), len(share)
if sys.argv[1] == "tuned":
    print(*serving.run(main()))
else:
    import uvloop
    print(*uvloop.run(main()))
"""


def _collections(mode: str) -> tuple[int, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _POLLS, mode], capture_output=True, text=True, check=True
    )
    full, scanned, frozen, _ = map(int, out.stdout.split())
    return full, scanned, frozen


def test_served_process_freezes_start_up_and_polls_cause_no_full_collection() -> None:
    plain_full, plain_scanned, _ = _collections("plain")
    tuned_full, tuned_scanned, frozen = _collections("tuned")
    assert plain_full >= 2  # Python's defaults: the polls' objects reach the oldest generation
    assert tuned_full == 0
    assert frozen > 100_000  # start-up's objects are out of every pass
    assert tuned_scanned < plain_scanned - 100_000
