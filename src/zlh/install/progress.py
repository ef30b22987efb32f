"""Mutable progress of the running provisioning job, snapshotted into ``Progress`` on demand.

Counters are plain attributes so the download loop can bump them per chunk without building a
pydantic model each time; ``/status`` calls :meth:`ProgressTracker.snapshot`.
"""

from __future__ import annotations

from zlh.schemas import Progress, ProvisionStep

__all__ = ["ProgressTracker"]


class ProgressTracker:
    def __init__(self) -> None:
        self.step: ProvisionStep | None = None
        self.message = ""
        self.bytes_done = 0
        self.bytes_total: int | None = None
        self.finished = False

    def enter(self, step: ProvisionStep, message: str, *, bytes_total: int | None = None) -> None:
        self.step = step
        self.message = message
        self.bytes_done = 0
        self.bytes_total = bytes_total
        self.finished = step is ProvisionStep.READY

    def bytes(self, done: int) -> None:
        self.bytes_done = done

    def snapshot(self) -> Progress | None:
        if self.step is None:
            return None
        if self.finished:
            percent = 100.0
        elif self.bytes_total:
            percent = round(min(100.0, 100.0 * self.bytes_done / self.bytes_total), 1)
        else:
            percent = 0.0
        return Progress(
            step=self.step,
            percent=percent,
            bytes_done=self.bytes_done,
            bytes_total=self.bytes_total,
            message=self.message,
        )
