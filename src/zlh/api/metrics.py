"""The platform's Prometheus metrics, in a registry of each app's own (never the global one).

Two kinds of source:

* instruments the components own and update as things happen (poll cycles and failures,
  provisioning steps, login failures), created unregistered and registered here;
* collectors that read state at scrape time: containers by state and runtime (one grouped
  query), the front's traffic counters (zlh.proxy.metrics, plain integers on the hot path),
  artifact downloads (the built-in store's own counts) and per-container CPU and memory
  (:class:`~zlh.api.usage.UsageCache`, bounded in cost).

No label carries free text a user chose: states, runtimes and artifacts come from the
platform's enums and the operator's catalog, and containers are named by vmid only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from zlh.api.usage import UsageCache
from zlh.proxy.metrics import FrontStats, RouteStats

__all__ = [
    "CONTENT_TYPE",
    "ArtifactDownloads",
    "ContainerCounts",
    "FrontCollector",
    "Metrics",
    "UsageCollector",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# Step and total provisioning times: seconds (a download of a large runtime takes minutes).
_PROVISION_BUCKETS: Final = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
# One tick's polls: loopback answers in milliseconds, a timed-out agent takes poll_timeout_s.
_CYCLE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


class Metrics:
    """One platform's metrics: the instruments the components update, the collectors added
    with ``register``, and ``render`` for a scrape."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.provision_step_seconds = Histogram(
            "zlh_provision_step_seconds",
            "Seconds each provisioning step took: container-start (the backend's create and "
            "start) as the API times it, the agent's steps as its status polls see them (to "
            "within one poll_interval_provisioning_s)",
            ["step"],
            buckets=_PROVISION_BUCKETS,
            registry=registry,
        )
        self.provision_seconds = Histogram(
            "zlh_provision_seconds",
            "Seconds from a dev request to its container being ready (first provisioning)",
            buckets=_PROVISION_BUCKETS,
            registry=registry,
        )
        self.poll_cycle_seconds = Histogram(
            "zlh_poll_cycle_seconds",
            "Seconds from launching one poller tick's agent polls until the last of them ended",
            buckets=_CYCLE_BUCKETS,
            registry=registry,
        )
        self.poll_failures = Counter(
            "zlh_poll_failures",
            "Agent status polls that failed (no answer, an error, a bad document), including "
            "those of agents still booting",
            registry=registry,
        )
        self.login_failures = Counter(
            "zlh_login_failures",
            "Failed password checks: logins and password changes with a wrong password or user "
            "name (throttled attempts are not checked and not counted)",
            registry=registry,
        )

    def register(self, *collectors: Collector) -> None:
        for collector in collectors:
            self.registry.register(collector)

    def render(self) -> bytes:
        """The Prometheus text format. Blocking (database, backend): call off the loop."""
        return generate_latest(self.registry)


class ContainerCounts(Collector):
    """``zlh_containers{state, runtime}``, from ``count()`` (state, runtime) -> n at scrape."""

    def __init__(self, count: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        self._count = count

    def describe(self) -> Iterable[Metric]:
        return [_containers()]

    def collect(self) -> Iterable[Metric]:
        family = _containers()
        for (state, runtime), n in sorted(self._count().items()):
            family.add_metric([state, runtime], n)
        return [family]


def _containers() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "zlh_containers", "Containers by state and runtime", labels=["state", "runtime"]
    )


class Front(Protocol):
    stats: FrontStats

    def open_websockets(self, stats: RouteStats) -> int: ...


class FrontCollector(Collector):
    """The front's counters by route class (``ide``, ``preview``, ``api``)."""

    def __init__(self, front: Front) -> None:
        self._front = front

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        requests, bytes_in, bytes_out, sockets = families
        for name, stats in self._front.stats.by_class():
            requests.add_metric([name], stats.requests)
            bytes_in.add_metric([name], stats.bytes_in)
            bytes_out.add_metric([name], stats.bytes_out)
            sockets.add_metric([name], self._front.open_websockets(stats))
        return families

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily, CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily
    ]:
        route = ["route"]
        return (
            CounterMetricFamily(
                "zlh_front_requests",
                "Requests the public front routed, by route class",
                labels=route,
            ),
            CounterMetricFamily(
                "zlh_front_received_bytes",
                "Bytes clients sent through the front (request heads as relayed, bodies, "
                "WebSocket frames), by route class",
                labels=route,
            ),
            CounterMetricFamily(
                "zlh_front_sent_bytes",
                "Bytes relayed back to clients by the front, by route class",
                labels=route,
            ),
            GaugeMetricFamily(
                "zlh_front_websockets_open", "WebSocket tunnels open, by route class", labels=route
            ),
        )


class Downloads(Protocol):
    downloads: dict[str, int]


class ArtifactDownloads(Collector):
    """``zlh_artifact_downloads_total{artifact}`` from the built-in store's own counts."""

    def __init__(self, store: Downloads) -> None:
        self._store = store

    def describe(self) -> Iterable[Metric]:
        return [_downloads()]

    def collect(self) -> Iterable[Metric]:
        family = _downloads()
        for artifact, n in sorted(dict(self._store.downloads).items()):
            family.add_metric([artifact], n)
        return [family]


def _downloads() -> CounterMetricFamily:
    return CounterMetricFamily(
        "zlh_artifact_downloads",
        "Downloads started from the built-in artifact store, by catalog artifact "
        "(kind/name/version; anything else is 'other')",
        labels=["artifact"],
    )


class UsageCollector(Collector):
    """Per-container CPU and memory from the backend, through the cache that bounds its cost."""

    def __init__(self, cache: UsageCache) -> None:
        self._cache = cache

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        cpu_seconds, cpu_cores, memory = self._families()
        for vmid, usage in sorted(self._cache.snapshot().items()):
            label = [str(vmid)]
            if usage.cpu_seconds is not None:
                cpu_seconds.add_metric(label, usage.cpu_seconds)
            if usage.cpu_cores is not None:
                cpu_cores.add_metric(label, usage.cpu_cores)
            memory.add_metric(label, usage.memory_bytes)
        yield from (cpu_seconds, cpu_cores, memory)

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        vmid = ["vmid"]
        return (
            CounterMetricFamily(
                "zlh_container_cpu_seconds",
                "CPU time a running container used (lxc: its cgroup; process: the agent's "
                "process tree)",
                labels=vmid,
            ),
            GaugeMetricFamily(
                "zlh_container_cpu_cores",
                "CPU cores a running container uses now, where the backend reports a rate "
                "instead of a total (proxmox)",
                labels=vmid,
            ),
            GaugeMetricFamily(
                "zlh_container_memory_bytes", "Memory a running container uses", labels=vmid
            ),
        )
