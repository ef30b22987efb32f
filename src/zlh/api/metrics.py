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

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from zlh.proxy.metrics import FrontStats, RouteStats

if TYPE_CHECKING:
    from zlh.api.usage import UsageCache  # which reads the replicas' shares, which count here

__all__ = [
    "CONTENT_TYPE",
    "FrontCollector",
    "LabelledCounts",
    "Metrics",
    "UsageCollector",
    "artifact_downloads",
    "container_counts",
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
        self.poller_share = Gauge(
            "zlh_poller_share_containers",
            "Containers this API process polls: all polled ones on a single node, its share "
            "of them among live replicas (as of its last reload)",
            registry=registry,
        )
        self.replicas_live = Gauge(
            "zlh_replicas_live",
            "API replicas with a live heartbeat in the database, as this one last read them "
            "(0 on a single SQLite node, which keeps no membership)",
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


class _Families(Collector):
    """A collector of fixed families: ``_families`` makes them empty (what ``describe``
    gives the registry), ``collect`` fills them in at scrape time."""

    def _families(self) -> Sequence[Metric]:
        raise NotImplementedError

    def describe(self) -> Iterable[Metric]:
        return list(self._families())


class LabelledCounts(_Families):
    """One family whose samples ``samples()`` gives at scrape time: (label values, value)."""

    def __init__(
        self,
        family: Callable[[], CounterMetricFamily | GaugeMetricFamily],
        samples: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
    ) -> None:
        self._family = family
        self._samples = samples

    def _families(self) -> Sequence[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for labels, n in sorted(self._samples()):
            family.add_metric(list(labels), n)
        return [family]


def container_counts(count: Callable[[], Mapping[tuple[str, str], int]]) -> LabelledCounts:
    """``zlh_containers{state, runtime}``, from ``count()`` (state, runtime) -> n."""
    return LabelledCounts(
        lambda: GaugeMetricFamily(
            "zlh_containers", "Containers by state and runtime", labels=["state", "runtime"]
        ),
        lambda: count().items(),
    )


class Downloads(Protocol):
    downloads: dict[str, int]


def artifact_downloads(store: Downloads) -> LabelledCounts:
    """``zlh_artifact_downloads_total{artifact}`` from the built-in store's own counts."""
    return LabelledCounts(
        lambda: CounterMetricFamily(
            "zlh_artifact_downloads",
            "Downloads started from the built-in artifact store, by catalog artifact "
            "(kind/name/version; anything else is 'other')",
            labels=["artifact"],
        ),
        lambda: [((artifact,), n) for artifact, n in dict(store.downloads).items()],
    )


class Front(Protocol):
    stats: FrontStats

    def open_websockets(self, stats: RouteStats) -> int: ...


class Workers(Protocol):
    def totals(self) -> dict[str, list[int]]: ...
    def requests_by_worker(self) -> dict[int, int]: ...


class FrontCollector(_Families):
    """The front's counters by route class (``ide``, ``preview``, ``api``): the front in this
    process plus, with ``workers``, the front workers' last reports (at most
    zlh.feedwire.STATS_S old), and the requests each worker routed."""

    def __init__(self, front: Front, workers: Workers | None = None) -> None:
        self._front = front
        self._workers = workers

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        requests, bytes_in, bytes_out, sockets = families
        others = self._workers.totals() if self._workers is not None else {}
        by_worker = CounterMetricFamily(
            "zlh_front_worker_requests",
            "Requests each front worker routed (0: the one in the API's process; a worker "
            "started again counts from 0)",
            labels=["worker"],
        )
        own = 0
        for name, stats in self._front.stats.by_class():
            more = others.get(name, [0, 0, 0, 0])
            requests.add_metric([name], stats.requests + more[0])
            bytes_in.add_metric([name], stats.bytes_in + more[1])
            bytes_out.add_metric([name], stats.bytes_out + more[2])
            sockets.add_metric([name], self._front.open_websockets(stats) + more[3])
            own += stats.requests
        by_worker.add_metric(["0"], own)
        if self._workers is not None:
            for index, count in self._workers.requests_by_worker().items():
                by_worker.add_metric([str(index)], count)
        return (*families, by_worker)

    def _families(
        self,
    ) -> tuple[CounterMetricFamily, CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
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


class UsageCollector(_Families):
    """Per-container CPU and memory from the backend, through the cache that bounds its cost."""

    def __init__(self, cache: UsageCache) -> None:
        self._cache = cache

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

    def _families(self) -> tuple[CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
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
