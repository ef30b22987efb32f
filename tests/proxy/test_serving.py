"""The front's process keeps freed heap memory: reads of 256 KB do not fault in fresh pages."""

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
