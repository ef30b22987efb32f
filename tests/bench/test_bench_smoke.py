"""The in-process benchmark still drives the front as it serves IDEs (tiny rounds; the
numbers themselves are docs/performance.md's, from full runs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from support import REPO


def test_the_in_process_front_bench_completes_an_exchange_and_prints_its_ratios() -> None:
    env = {**os.environ, "ROUNDS": "1", "REQUESTS": "50", "POLLUTE_KB": "64"}
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "proxy_inproc.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "client side cold/hot:" in result.stdout
    assert "upstream side cold/hot:" in result.stdout


def test_the_scrape_bench_measures_scrapes_over_the_proxmox_stand_in() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "metrics_scrape.py"), "--containers", "20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 12 and lines[0].startswith("scrape 0: ")
    assert lines[-1].endswith("20 containers with figures")  # the refresh ended meanwhile


def test_the_agent_memory_bench_measures_idle_and_provisioned_agents_and_baselines() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "agent_rss.py"), "--runs", "1", "--artifact-mb", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    idle = re.search(r"idle: +RSS ([\d.]+) MB +Pss ([\d.]+) MB", out)
    provisioned = re.search(r"after provisioning a \d+ MB runtime: RSS ([\d.]+) MB", out)
    assert idle and provisioned, out
    assert 15 < float(idle[1]) < float(provisioned[1]) < 200, out
    assert "baseline python + aiohttp.web: RSS" in out
    assert "  zlh.agent.app " in out  # the import steps ran to the end


def test_the_scale_bench_splits_200_agents_over_two_replicas_and_rebalances_after_a_kill() -> None:
    args = ["--agents", "200", "--interval", "1", "--heartbeat", "0.3", "--lease", "1.5"]
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "scale.py"), *args, "--window", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    shares = re.findall(r"replica ([ab]): share (\d+) .* p99 ([\d.]+)s .* CPU ([\d.]+) cores", out)
    assert [name for name, *_ in shares] == ["a", "b"], out
    assert sum(int(share) for _, share, _, _ in shares) == 200, out
    assert all(0 < int(share) < 200 for _, share, _, _ in shares), out
    rebalance = re.search(
        r"a sees b dead after ([\d.]+)s .*a's share is all 200 after ([\d.]+)s "
        r".*takeover \(a has read every one of b's \d+ agents\) after ([\d.]+)s "
        r".*every agent polled again after ([\d.]+)s",
        out,
    )
    assert rebalance, out
    dead_s, share_s, took_s, polled_s = (float(rebalance[n]) for n in (1, 2, 3, 4))
    # Seen dead within one lease of the kill (b's last heartbeat came before it; the bench
    # reads the survivor's state every 0.2 s), its share polled right after.
    assert dead_s <= 1.5 + 0.3, out
    assert dead_s <= share_s <= took_s <= polled_s <= dead_s + 3, out
