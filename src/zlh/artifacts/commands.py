"""Handlers of ``zlh artifacts …`` (arguments are declared in ``zlh.artifacts.cli``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TextIO

from zlh.artifacts.progress import TransferProgress
from zlh.artifacts.store import ArtifactStore, VerifyProblem
from zlh.cliargs import data_dir_from
from zlh.errors import UsageError
from zlh.listen import parse_listen, require_free
from zlh.schemas import ArtifactFormat, ArtifactKind, ArtifactMetadata

__all__ = ["cmd_add", "cmd_build", "cmd_list", "cmd_remove", "cmd_serve", "cmd_verify"]


def store_from(args: argparse.Namespace) -> ArtifactStore:
    """``--store``, else ``<data dir>/artifacts``."""
    explicit: Path | None = args.store
    return ArtifactStore(explicit if explicit is not None else data_dir_from(args) / "artifacts")


def cmd_add(args: argparse.Namespace) -> int:
    store = store_from(args)
    if args.url is not None and args.sha256 is None:
        raise UsageError("--url needs --sha256 (the digest the download must have)")
    fmt = _format(args.format)
    metadata = ArtifactMetadata(
        upstream_version=args.upstream_version,
        source=args.source or args.url,
        labels=_labels(args.label),
    )
    add = (
        partial(store.add_url, args.kind, args.name, args.version, args.url)
        if args.url is not None
        else partial(store.add_file, args.kind, args.name, args.version, args.file)
    )
    artifact = add(
        expected_sha256=args.sha256,
        filename=args.filename,
        fmt=fmt,
        strip_components=args.strip_components,
        bin_dirs=args.bin,
        metadata=metadata,
        replace=args.replace,
        make_default=args.default,
        progress=TransferProgress(),
    )
    print(f"{args.kind} {args.name} {args.version}: {artifact.url}")
    print(f"  sha256 {artifact.sha256}  {artifact.size} bytes")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = store_from(args)
    catalog = store.catalog()
    if args.json:
        print(catalog.model_dump_json(indent=2, exclude_none=True))
        return 0
    rows = [("KIND", "NAME", "VERSION", "DEFAULT", "SIZE", "SHA256", "URL")]
    for kind in ArtifactKind:
        for name, entry in sorted(catalog.section(kind).items()):
            for item in entry.versions:
                a = item.artifact
                default = "*" if item.version == entry.default else ""
                rows.append(
                    (kind.value, name, item.version, default, str(a.size), a.sha256[:16], a.url)
                )
    if len(rows) == 1:
        print(f"the catalog at {store.catalog_path} is empty")
        return 0
    _print_table(rows)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    store = store_from(args)
    problems = store.verify()
    count = sum(len(e.versions) for k in ArtifactKind for e in store.catalog().section(k).values())
    if not problems:
        print(f"{count} artifact(s) match the catalog")
        return 0
    _print_table(
        [("KIND", "NAME", "VERSION", "PROBLEM", "FILE", "EXPECTED", "ACTUAL")]
        + [_problem_row(p) for p in problems],
        file=sys.stderr,
    )
    print(f"{len(problems)} of {count} artifact(s) do not match the catalog", file=sys.stderr)
    return 1


def cmd_remove(args: argparse.Namespace) -> int:
    store = store_from(args)
    store.remove(args.kind, args.name, args.version)
    print(f"removed {args.kind} {args.name} {args.version}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from zlh.artifacts.server import ArtifactServer

    store = store_from(args)
    if not store.root.is_dir():
        raise UsageError(f"no artifact store at {store.root} (add or build an artifact first)")
    host, port = _host_port(args.listen)
    store.catalog()  # refuse to serve a catalog that does not validate
    require_free(host, port)
    uvicorn.run(
        ArtifactServer(store.root),
        host=host,
        port=port,
        http="httptools",
        lifespan="off",
        access_log=args.access_log,
        log_level="info",
    )
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from zlh.artifacts.builders import build

    cache_dir: Path = args.cache_dir or data_dir_from(args) / "cache"
    if args.build_version is not None and len(args.what) > 1:
        raise UsageError("--version names one artifact's version: build one artifact with it")
    for what in args.what:
        build(
            what,
            version=args.build_version,
            store=store_from(args),
            cache_dir=cache_dir,
            progress=TransferProgress(),
        )
    return 0  # the builders report their own progress and summary


def _format(value: str | None) -> ArtifactFormat | None:
    if value is None:
        return None
    try:
        return ArtifactFormat(value)
    except ValueError:
        known = ", ".join(f.value for f in ArtifactFormat)
        raise UsageError(f"--format must be one of {known}, got {value!r}") from None


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--label wants KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels


def _host_port(listen: str) -> tuple[str, int]:
    try:
        return parse_listen(listen)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None


def _problem_row(problem: VerifyProblem) -> tuple[str, ...]:
    def describe(sha256: str | None, size: int | None) -> str:
        return "-" if sha256 is None else f"{sha256[:16]} {size}B"

    return (
        problem.kind.value,
        problem.name,
        problem.version,
        problem.reason,
        str(problem.path),
        describe(problem.expected_sha256, problem.expected_size),
        describe(problem.actual_sha256, problem.actual_size),
    )


def _print_table(rows: Sequence[tuple[str, ...]], *, file: TextIO | None = None) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(line.rstrip(), file=file or sys.stdout)
