"""Single ``Range: bytes=…`` requests (RFC 9110), shared by the artifact server and the agent.

Stdlib only: the agent imports it, and the agent's install stays lean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["UNSATISFIABLE", "ByteRange", "Unsatisfiable", "parse_range"]

Unsatisfiable = Literal["unsatisfiable"]
UNSATISFIABLE: Unsatisfiable = "unsatisfiable"


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(header: str, size: int) -> ByteRange | Unsatisfiable | None:
    """One ``bytes=`` range of a ``size``-byte file.

    Returns the range, ``None`` to ignore the header (malformed, another unit, several ranges:
    the whole file is sent) or ``UNSATISFIABLE`` when it is well-formed but outside (416).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:  # suffix: the last N bytes
        suffix = int(last)
        return ByteRange(max(size - suffix, 0), size - 1) if suffix and size else UNSATISFIABLE
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return ByteRange(start, min(int(last), size - 1) if last else size - 1)
