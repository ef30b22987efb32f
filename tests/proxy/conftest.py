"""One harness (event loop thread, upstream, default front) for the whole proxy test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from proxy_kit import Harness


@pytest.fixture(scope="session")
def harness() -> Iterator[Harness]:
    h = Harness()
    try:
        yield h
    finally:
        h.close()
