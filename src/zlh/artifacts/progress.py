"""Byte-transfer progress for downloads and copies: rich bars on a terminal, silence otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich costs ~0.1 s to import: only when a bar is drawn
    from rich.console import Console

__all__ = ["Advance", "TransferProgress"]

Advance = Callable[[int], None]
"""Called with the number of bytes just moved."""


def _ignore(_nbytes: int) -> None:
    return None


class TransferProgress:
    """Hands out one progress bar per transfer.

    ``enabled=None`` draws bars only when stderr is a terminal, so logs and pipes stay clean.
    """

    def __init__(self, *, enabled: bool | None = None, console: Console | None = None) -> None:
        self._console = console
        if enabled is None:
            enabled = console.is_terminal if console is not None else sys.stderr.isatty()
        self.enabled = enabled

    @classmethod
    def quiet(cls) -> TransferProgress:
        return cls(enabled=False)

    @contextmanager
    def transfer(self, description: str, total: int | None) -> Iterator[Advance]:
        """A bar for one transfer of ``total`` bytes (None when unknown, e.g. a pipe)."""
        if not self.enabled:
            yield _ignore
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        console = self._console or Console(stderr=True)
        with Progress(*columns, console=console, transient=True) as bars:
            task = bars.add_task(description, total=total)
            yield lambda nbytes: bars.advance(task, nbytes)
