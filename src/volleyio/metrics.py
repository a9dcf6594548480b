"""Prometheus exposition of volleyio's servers (optional dependency ``prometheus-client``).

Counting costs nothing measurable on the hot path: the servers keep plain integer
counters on objects they already have (the Engine.IO session, the server cores), and
:class:`VolleyioCollector` reads them only when Prometheus scrapes. Install the extra
(``pip install volleyio[metrics]``) and either register the collector in a registry your
application already exposes, or let volleyio serve ``/metrics``::

    from prometheus_client import REGISTRY
    from volleyio.metrics import VolleyioCollector

    REGISTRY.register(VolleyioCollector(sio))             # your own /metrics shows it

    # or: volleyio answers GET /metrics itself (its own registry by default)
    await nursery.start(partial(sio.serve, "0.0.0.0", 8000, metrics_path="/metrics"))

The metrics are listed in the documentation (``docs/observability.rst``).

Cluster adapters report through :class:`ClusterMetrics`: an adapter with a
``cluster_metrics`` attribute holding one is exported too (node count, publish lag).

This module imports ``prometheus_client`` only when a collector or an endpoint is made;
:class:`LatencyHistogram`, :class:`ClusterMetrics` and :data:`PROCESS` need nothing.
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .trio._http import Request, Response

__all__ = [
    "DEFAULT_LATENCY_BUCKETS",
    "PROCESS",
    "ClusterMetrics",
    "LatencyHistogram",
    "MetricsEndpoint",
    "VolleyioCollector",
]

#: Upper bounds (seconds) of the latency histograms: 1 ms to 10 s.
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class LatencyHistogram:
    """A histogram kept as plain integers (no lock, no prometheus-client call per
    observation); :class:`VolleyioCollector` turns it into a Prometheus histogram."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float] = DEFAULT_LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(upper bound as text, cumulative count), ..., ("+Inf", count)]``."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts):
            running += count
            out.append((_float_text(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _float_text(value: float) -> str:
    return repr(float(value))


class ClusterMetrics:
    """What a cluster adapter reports (the interface the Redis adapters call).

    An adapter exposes one as its ``cluster_metrics`` attribute and calls:

    * :meth:`set_nodes` whenever its view of the live nodes changes (itself included);
    * :meth:`observe_publish_lag` for each message it receives from another node, with
      the time between the sender's publish and now (seconds, from the message's own
      timestamp), or for its own publishes with the round trip, as it can measure;
    * :meth:`published` / :meth:`received` per message sent / taken from the broker.

    Exported as ``volleyio_cluster_nodes``, ``volleyio_cluster_publish_lag_seconds``,
    ``volleyio_cluster_messages_published_total`` and
    ``volleyio_cluster_messages_received_total``.
    """

    __slots__ = ("nodes", "publish_lag", "messages_published", "messages_received")

    def __init__(self) -> None:
        self.nodes = 1
        self.publish_lag = LatencyHistogram()
        self.messages_published = 0
        self.messages_received = 0

    def set_nodes(self, count: int) -> None:
        self.nodes = count

    def observe_publish_lag(self, seconds: float) -> None:
        self.publish_lag.observe(max(seconds, 0.0))

    def published(self, count: int = 1) -> None:
        self.messages_published += count

    def received(self, count: int = 1) -> None:
        self.messages_received += count


class _ProcessCounters:
    """Process-wide counters of code that has no server object at hand."""

    __slots__ = ("websocket_slow_consumer_closes",)

    def __init__(self) -> None:
        #: Plain WebSocket connections closed 1008 "slow consumer" (fan-out queue full).
        self.websocket_slow_consumer_closes = 0


#: The process-wide counters (read by :class:`VolleyioCollector`).
PROCESS = _ProcessCounters()


# ---------------------------------------------------------------------------- collector


def _servers_of(target: Any) -> tuple[Any | None, Any | None, Any | None]:
    """``(Socket.IO server, Engine.IO core, WebSocketServer)`` of what was registered."""
    from .engineio.server import EngineIOServer

    sio = eio = ws = None
    if hasattr(target, "core") and hasattr(target, "engineio") and hasattr(target, "ack_latency"):
        sio = target  # volleyio.trio.SocketIOServer
        eio = target.engineio.core
    elif isinstance(target, EngineIOServer):
        eio = target
    elif isinstance(getattr(target, "core", None), EngineIOServer):
        eio = target.core  # volleyio.trio.EngineIOApp
    elif hasattr(target, "connections") and hasattr(target, "active_tasks"):
        ws = target  # volleyio.trio.WebSocketServer
    else:
        raise TypeError(f"cannot collect metrics of {target!r}")
    return sio, eio, ws


class VolleyioCollector:
    """A Prometheus collector of volleyio servers, read at scrape time.

    ``targets``: :class:`volleyio.trio.SocketIOServer`, :class:`volleyio.trio.EngineIOApp`
    (or its sans-I/O ``EngineIOServer``) and :class:`volleyio.trio.WebSocketServer`
    objects; more can be added with :meth:`add`. Several servers of one kind are
    summed. ``server_label``: when given, every sample gets a ``server`` label with it
    (to register one collector per server in one registry).
    """

    def __init__(self, *targets: Any, server_label: str | None = None) -> None:
        from prometheus_client.registry import Collector  # noqa: F401 - fail early without the extra

        self._targets: list[tuple[Any | None, Any | None, Any | None]] = []
        self._server_label = server_label
        for target in targets:
            self.add(target)

    def add(self, target: Any) -> None:
        """Collect ``target`` too (same kinds as the constructor)."""
        self._targets.append(_servers_of(target))

    def describe(self) -> Iterable[Any]:
        return []  # unchecked collector: the metric set depends on the targets

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        extra = ["server"] if self._server_label is not None else []
        extra_value = [self._server_label] if self._server_label is not None else []

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Any:
            return GaugeMetricFamily(name, doc, labels=[*extra, *labels])

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Any:
            return CounterMetricFamily(name, doc, labels=[*extra, *labels])

        def add(metric: Any, value: float, *labels: str) -> None:
            metric.add_metric([*extra_value, *labels], value)

        eio_cores = [eio for _, eio, _ in self._targets if eio is not None]
        sio_servers = [sio for sio, _, _ in self._targets if sio is not None]
        ws_servers = [ws for _, _, ws in self._targets if ws is not None]

        # -- Engine.IO sessions and traffic
        sessions = gauge("volleyio_engineio_sessions", "Open Engine.IO sessions by transport.", ["transport"])
        opened = counter("volleyio_engineio_sessions_opened", "Engine.IO sessions opened.")
        upgrades = counter("volleyio_engineio_upgrades", "Upgrades to WebSocket by result.", ["result"])
        disconnects = counter("volleyio_engineio_disconnects", "Engine.IO sessions closed by reason.", ["reason"])
        messages_in = counter(
            "volleyio_engineio_messages_received", "Engine.IO messages received by transport.", ["transport"]
        )
        messages_out = counter("volleyio_engineio_messages_sent", "Engine.IO messages sent by transport.", ["transport"])
        bytes_in = counter(
            "volleyio_engineio_received_bytes",
            "Engine.IO data received by transport: POST bodies and WebSocket frames (text counted in characters).",
            ["transport"],
        )
        bytes_out = counter(
            "volleyio_engineio_sent_bytes",
            "Engine.IO message payloads sent by transport (text counted in characters).",
            ["transport"],
        )
        slow = counter(
            "volleyio_slow_consumer_closes", "Connections closed because their outgoing buffer overflowed.", ["layer"]
        )
        by_transport: dict[str, int] = {"polling": 0, "websocket": 0}
        traffic: dict[str, list[int]] = {"polling": [0, 0, 0, 0], "websocket": [0, 0, 0, 0]}
        closes: dict[str, int] = {}
        totals = {"sessions_opened": 0, "upgrades": 0, "upgrades_failed": 0}
        for core in eio_cores:
            stats = core.statistics()
            for transport in ("polling", "websocket"):
                by_transport[transport] += stats[transport]
            for key in totals:
                totals[key] += stats.get(key, 0)
            for transport, values in core.traffic().items():
                row = traffic.setdefault(transport, [0, 0, 0, 0])
                for index, key in enumerate(("messages_in", "messages_out", "bytes_in", "bytes_out")):
                    row[index] += values[key]
            for reason, count in core.closes().items():
                closes[reason] = closes.get(reason, 0) + count
        for transport, count in by_transport.items():
            add(sessions, count, transport)
        add(opened, totals["sessions_opened"])
        add(upgrades, totals["upgrades"], "ok")
        add(upgrades, totals["upgrades_failed"], "failed")
        for reason, count in sorted(closes.items()):
            add(disconnects, count, reason)
        for transport, row in traffic.items():
            add(messages_in, row[0], transport)
            add(messages_out, row[1], transport)
            add(bytes_in, row[2], transport)
            add(bytes_out, row[3], transport)
        add(slow, closes.get("slow consumer", 0), "engineio")
        add(slow, PROCESS.websocket_slow_consumer_closes, "websocket")
        yield from (sessions, opened, upgrades, disconnects, messages_in, messages_out, bytes_in, bytes_out, slow)

        # -- plain WebSocket / HTTP front doors
        if ws_servers:
            ws_open = gauge("volleyio_websocket_connections", "Open plain WebSocket connections.")
            tcp_open = gauge("volleyio_http_connections", "TCP connections being handled by the front door.")
            add(ws_open, sum(len(server.connections) for server in ws_servers))
            add(tcp_open, sum(server.active_tasks for server in ws_servers))
            yield ws_open
            yield tcp_open

        # -- Socket.IO
        if sio_servers:
            sockets = gauge("volleyio_socketio_sockets", "Connected Socket.IO sockets by namespace.", ["namespace"])
            pending = gauge("volleyio_socketio_acks_pending", "Acknowledgements the server waits for.")
            requested = counter("volleyio_socketio_acks_requested", "Acknowledgements the server asked of clients.")
            latency = HistogramMetricFamily(
                "volleyio_socketio_ack_latency_seconds",
                "Time until a client answered an acknowledgement the server asked for.",
                labels=extra,
            )
            per_namespace: dict[str, int] = {}
            pending_count = requested_count = 0
            for sio in sio_servers:
                for name, nsp in sio.namespaces.items():
                    per_namespace[name] = per_namespace.get(name, 0) + len(nsp.sockets)
                stats = sio.statistics()
                pending_count += stats["pending_acks"]
                requested_count += sio._acks_sent
            for name, count in sorted(per_namespace.items()):
                add(sockets, count, name)
            add(pending, pending_count)
            add(requested, requested_count)
            latency.add_metric(extra_value, *_merge_histograms([sio.ack_latency for sio in sio_servers]))
            yield from (sockets, pending, requested, latency)

            # -- cluster adapters
            cluster_list = [c for c in (_cluster_metrics_of(sio) for sio in sio_servers) if c is not None]
            if cluster_list:
                nodes = gauge("volleyio_cluster_nodes", "Live nodes the cluster adapter sees (itself included).")
                published = counter("volleyio_cluster_messages_published", "Messages published to the cluster.")
                received = counter("volleyio_cluster_messages_received", "Messages received from other nodes.")
                lag = HistogramMetricFamily(
                    "volleyio_cluster_publish_lag_seconds",
                    "Time from a node's publish to its delivery here.",
                    labels=extra,
                )
                add(nodes, max(c.nodes for c in cluster_list))
                add(published, sum(c.messages_published for c in cluster_list))
                add(received, sum(c.messages_received for c in cluster_list))
                lag.add_metric(extra_value, *_merge_histograms([c.publish_lag for c in cluster_list]))
                yield from (nodes, published, received, lag)


def _cluster_metrics_of(sio: Any) -> ClusterMetrics | None:
    """The :class:`ClusterMetrics` of the server's cluster adapter: the adapter given as
    ``adapter=`` (kept by the server as ``cluster``/``_cluster`` when the core gets only its
    room store) or the core's adapter itself."""
    for holder in (getattr(sio, "cluster", None), getattr(sio, "_cluster", None), sio.core.adapter):
        metrics = getattr(holder, "cluster_metrics", None)
        if isinstance(metrics, ClusterMetrics):
            return metrics
    return None


def _merge_histograms(histograms: Sequence[LatencyHistogram]) -> tuple[list[tuple[str, float]], float]:
    """``(buckets, sum)`` for ``HistogramMetricFamily.add_metric``."""
    if not histograms:
        empty = LatencyHistogram()
        return [(bound, float(count)) for bound, count in empty.cumulative()], 0.0
    merged: dict[str, float] = {}
    for histogram in histograms:
        for bound, count in histogram.cumulative():
            merged[bound] = merged.get(bound, 0.0) + count
    return list(merged.items()), sum(h.sum for h in histograms)


# ---------------------------------------------------------------------------- endpoint


class MetricsEndpoint:
    """A ``process_request`` hook that answers ``GET <path>`` with the Prometheus text
    format of ``registry`` and hands every other request to ``next`` (another
    ``process_request``, or ``None``).

    ``registry``: a ``prometheus_client.CollectorRegistry`` (``None``: a new one, holding
    only what you :meth:`register`). ``openmetrics``: answer in the OpenMetrics format
    when the scraper asks for it (``Accept`` header), as prometheus-client's own server.
    """

    def __init__(
        self,
        registry: Any = None,
        *,
        path: str = "/metrics",
        next: Callable[[Request], Awaitable[Response | None]] | None = None,  # noqa: A002
    ) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.path = path
        self.next = next

    def register(self, collector: Any) -> None:
        self.registry.register(collector)

    async def __call__(self, request: Request) -> Response | None:
        if request.path != self.path:
            return await self.next(request) if self.next is not None else None
        from prometheus_client.exposition import choose_encoder

        from .trio._http import Response

        if request.method not in ("GET", "HEAD"):
            return Response(405, b"405 Method Not Allowed\n", [("allow", "GET, HEAD"), ("content-type", "text/plain")])
        encoder, content_type = choose_encoder(request.header("accept") or "")
        body = encoder(self.registry)
        return Response(200, body if request.method == "GET" else b"", [("content-type", content_type)])
