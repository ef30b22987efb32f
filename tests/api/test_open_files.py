"""``zlh up`` and ``zlh api`` raise their soft limit of open files (a replica keeps a connection
to every agent of its share), never above the hard limit, never lowering it."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from api_kit import zlh_up
from support import free_port_pair
from zlh.api.commands import OPEN_FILES_WANTED

PROBE = """
import resource, sys
from zlh.api.commands import raise_open_files_limit
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
raise_open_files_limit(int(sys.argv[3]))
print(*resource.getrlimit(resource.RLIMIT_NOFILE))
"""
WANTED = 4096  # the target in these probes (raising a hard limit needs a privilege)


def limits_after(soft: int, hard: int) -> tuple[int, int]:
    """The (soft, hard) limits a fresh process ends with, started at ``soft``/``hard`` and
    raised towards :data:`WANTED`."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(soft), str(hard), str(WANTED)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1])


def test_a_shells_soft_limit_of_1024_is_raised_to_the_target() -> None:
    assert limits_after(1024, 8192) == (WANTED, 8192)


def test_the_soft_limit_goes_no_higher_than_the_hard_limit() -> None:
    assert limits_after(256, 2048) == (2048, 2048)


def test_the_target_is_what_the_systemd_unit_sets() -> None:
    unit = (Path(__file__).resolve().parents[2] / "deploy" / "zlh.service").read_text()
    assert f"LimitNOFILE={OPEN_FILES_WANTED}" in unit.splitlines()


def test_a_soft_limit_already_higher_is_kept() -> None:
    assert limits_after(WANTED + 1, 8192) == (WANTED + 1, 8192)


@pytest.mark.slow
def test_zlh_up_started_from_a_shell_with_1024_open_files_raises_its_limit(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # what zlh up inherits
    try:
        with zlh_up(tmp_path, store, free_port_pair()) as proc:
            limits = Path(f"/proc/{proc.pid}/limits").read_text()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    (line,) = [x for x in limits.splitlines() if x.startswith("Max open files")]
    assert int(line.split()[3]) == min(hard, OPEN_FILES_WANTED) > 1024
