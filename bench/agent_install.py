"""Agent install benchmark: prints numbers, asserts nothing.

1. Install a >=100 MB artifact served by ``zlh artifacts serve`` with the agent's install path
   (stream, sha256, safe extraction, verification, marker, atomic rename) vs
   ``curl URL | tar -xz -C DIR`` in the same run: median of N, ratio (goal <= 1.3x).
2. The guarded second provisioning through a real ``zlh agent``: POST /provision until
   ``state: ready``, in ms (goal <= 50 ms).
3. The agent's idle RSS in MB (goal <= 45 MB).

The artifact is synthetic but shaped like a runtime (thousands of files, mostly binary, some
text), unless ``--tarball`` names a real one (e.g. the code-server artifact).

    .venv/bin/python bench/agent_install.py [--runs 5] [--tarball PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support import ZLH, free_port, wait_for_port  # noqa: E402
from zlh.artifacts.store import ArtifactStore  # noqa: E402
from zlh.install.download import RetryPolicy  # noqa: E402
from zlh.install.installer import Installer, InstallRequest  # noqa: E402
from zlh.install.progress import ProgressTracker  # noqa: E402
from zlh.schemas import Artifact, ArtifactKind  # noqa: E402

TOKEN = "bench-secret"
WORDS = [f"w{i:04}" for i in range(2000)]


def synthetic_tarball(path: Path, min_bytes: int = 105 * 2**20) -> None:
    """Runtime-shaped: bin/, lib/ with many small text files and fewer large binaries."""
    rng = random.Random(42)
    with tarfile.open(path, "w:gz", compresslevel=6) as tar:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(f"rt/{name}")
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))

        i = 0
        while path.stat().st_size < min_bytes:
            if i % 8 == 0:
                size = int(rng.lognormvariate(11.5, 1.3))  # median ~100 KB, tail to MBs
                add(f"lib/bin{i // 100}/blob{i}.so", rng.randbytes(min(size, 8 * 2**20)))
            else:
                text = " ".join(rng.choices(WORDS, k=rng.randint(200, 4000))).encode()
                add(f"lib/mod{i // 200}/file{i}.js", text)
            i += 1
        add("bin/run", b"#!/bin/sh\necho ok\n", 0o755)


def serve(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [*ZLH, "artifacts", "serve", "--store", str(store), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port("127.0.0.1", port, proc=proc)
    return proc, f"http://127.0.0.1:{port}"


def time_agent_install(artifact: Artifact, url: str, target: Path) -> float:
    async def run() -> float:
        installer = Installer(policy=RetryPolicy())
        resolved = artifact.model_copy(update={"url": url})
        request = InstallRequest(ArtifactKind.RUNTIME, "node", "bench", resolved, target)
        start = time.perf_counter()
        await installer.ensure(request, ProgressTracker())
        elapsed = time.perf_counter() - start
        await installer.close()
        return elapsed

    return asyncio.run(run())


def time_curl_tar(url: str, target: Path) -> float:
    target.mkdir(parents=True)
    start = time.perf_counter()
    subprocess.run(
        f"curl -sf {url} | tar -xz -C {target} --strip-components=1", shell=True, check=True
    )
    return time.perf_counter() - start


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_agent(
    root: Path, *, command: Sequence[str] = ZLH, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    """A real ``zlh agent`` on a free port over ``root``, and a client holding its secret."""
    token = root.parent / f"{root.name}.token"
    token.write_text(TOKEN)
    port = free_port()
    proc = subprocess.Popen(
        [*command, "agent", "--listen", f"127.0.0.1:{port}", "--token-file", str(token),
         "--root", str(root), "--bind-host", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    wait_for_port("127.0.0.1", port, proc=proc)
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=600,
    )
    return proc, http


def runtime_payload(artifact: Artifact, url: str) -> dict[str, Any]:
    return {
        "vmid": 101,
        "runtime": {"name": "node", "version": "bench",
                    "artifact": artifact.model_dump(mode="json") | {"url": url}},
    }  # fmt: skip


def provision(http: httpx.Client, body: dict[str, Any]) -> float:
    """POST /provision and poll /status until ready: seconds taken."""
    start = time.perf_counter()
    accepted = http.post("/provision", json=body)  # no side effect inside an assert (-OO)
    assert accepted.status_code == 202, accepted.text
    while (state := http.get("/status").json()["state"]) == "provisioning":
        time.sleep(0.002)
    assert state == "ready", http.get("/status").json()
    return time.perf_counter() - start


@contextmanager
def served_artifact(tarball: Path, work: Path) -> Iterator[tuple[Artifact, str]]:
    """``tarball`` added to a store under ``work`` and served: its artifact and URL."""
    store = work / "store"
    subprocess.run(
        [*ZLH, "artifacts", "add", "runtime", "node", "bench", "--file", str(tarball),
         "--store", str(store)],
        check=True, capture_output=True,
    )  # fmt: skip
    artifact = ArtifactStore(store).catalog().resolve(ArtifactKind.RUNTIME, "node", "bench")[1]
    server, base = serve(store)
    try:
        yield artifact, artifact.resolved_url(base)
    finally:
        server.terminate()
        server.wait(10)


def agent_numbers(
    artifact: Artifact, url: str, work: Path, runs: int
) -> tuple[float, float, float]:
    proc, http = start_agent(work / "agent-root")
    try:
        http.get("/status")
        time.sleep(1.0)
        idle = rss_mb(proc.pid)
        body = runtime_payload(artifact, url)
        provision(http, body)  # the real install
        guarded = statistics.median(provision(http, body) for _ in range(max(runs, 5)))
        after = rss_mb(proc.pid)
        http.close()
        return idle, guarded * 1000, after
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tarball", type=Path, help="a real .tar.gz to use (stripComponents 1)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zlh-bench-agent-"))
    try:
        tarball = args.tarball or work / "rt.tar.gz"
        if args.tarball is None:
            synthetic_tarball(tarball)
        with served_artifact(tarball, work) as (artifact, url):
            agent_s, curl_s = [], []
            for i in range(args.runs):  # interleaved, so load on the machine hits both alike
                subprocess.run(["sync"], check=True)
                (work / f"a{i}").mkdir()
                agent_s.append(time_agent_install(artifact, url, work / f"a{i}" / "bench"))
                shutil.rmtree(work / f"a{i}")
                subprocess.run(["sync"], check=True)
                curl_s.append(time_curl_tar(url, work / f"c{i}"))
                shutil.rmtree(work / f"c{i}")
            idle, guarded_ms, after = agent_numbers(artifact, url, work, args.runs)
        with tarfile.open(tarball) as tar:
            files = sum(1 for _ in tar)
        agent_med, curl_med = statistics.median(agent_s), statistics.median(curl_s)
        print(f"artifact: {artifact.size / 2**20:.1f} MB compressed, {files} members ({tarball})")
        print(f"agent install (median of {args.runs}): {agent_med:.2f} s  runs {fmt(agent_s)}")
        print(f"curl | tar -xz (median of {args.runs}): {curl_med:.2f} s  runs {fmt(curl_s)}")
        print(f"ratio agent / curl|tar: {agent_med / curl_med:.2f}x  (goal <= 1.3x)")
        pairs = [a / c for a, c in zip(agent_s, curl_s, strict=True)]
        print(f"per-run ratios (same moment, robust to drifting load): {fmt(pairs)}")
        print(f"guarded second provisioning: {guarded_ms:.1f} ms  (goal <= 50 ms)")
        print(f"agent idle RSS: {idle:.1f} MB  (goal <= 45 MB); after provisioning: {after:.1f} MB")
        ratio = round(agent_med / curl_med, 3)
        print(json.dumps({"ratio": ratio, "guardedMs": round(guarded_ms, 1), "idleRssMb": idle}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
