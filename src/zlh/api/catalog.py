"""Where the API reads the runtime catalog: the built-in store's file, or an artifact server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Protocol

import aiohttp
from pydantic import ValidationError

from zlh.artifacts.store import CATALOG_FILE, load_catalog
from zlh.errors import ZlhError
from zlh.schemas import Catalog

__all__ = ["CatalogSource", "CatalogUnavailable", "HttpCatalog", "StoreCatalog"]


class CatalogUnavailable(ZlhError):
    status_code = 503


class CatalogSource(Protocol):
    async def get(self) -> Catalog:
        """The current catalog; CatalogUnavailable when it cannot be read."""


class StoreCatalog:
    """``<store>/catalog.json`` read from disk, parsed again only when the file changes."""

    def __init__(self, store: Path) -> None:
        self.path = store / CATALOG_FILE
        self._stamp: tuple[int, int] | None = None
        self._catalog = Catalog()

    async def get(self) -> Catalog:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return Catalog()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            try:
                self._catalog = await asyncio.to_thread(load_catalog, self.path)
            except ZlhError as exc:
                raise CatalogUnavailable(exc.message) from exc
            self._stamp = stamp
        return self._catalog


class HttpCatalog:
    """``<url>/catalog.json`` from an artifact server, reused for ``cache_s`` seconds."""

    def __init__(self, base_url: str, *, cache_s: float, timeout_s: float = 10.0) -> None:
        self.url = f"{base_url.rstrip('/')}/{CATALOG_FILE}"
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self._fetched_at = -float("inf")
        self._catalog: Catalog | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Catalog:
        async with self._lock:
            if self._catalog is None or time.monotonic() - self._fetched_at > self.cache_s:
                self._catalog = await self._fetch()
                self._fetched_at = time.monotonic()
            return self._catalog

    async def _fetch(self) -> Catalog:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, trust_env=False) as http,
                http.get(self.url) as resp,
            ):
                body = await resp.read()
                if resp.status != 200:
                    raise CatalogUnavailable(f"{self.url} answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CatalogUnavailable(f"cannot fetch the catalog from {self.url}: {exc}") from exc
        try:
            return Catalog.model_validate_json(body)
        except ValidationError as exc:
            raise CatalogUnavailable(f"{self.url} is not a valid catalog") from exc
