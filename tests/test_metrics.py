"""Prometheus exposition (issue 15, point 4): the plain counters the servers keep, the
collector that reads them at scrape time, and ``/metrics`` served by ``sio.serve``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

import volleyio.trio as vt
from volleyio.engineio.server import (
    AcceptWebSocket,
    EngineIOServer,
    HttpRequest,
    HttpResponse,
    ReadBody,
    ServerConfig,
)
from volleyio.socketio.adapter import InMemoryAdapter
from volleyio.trio import Socket, SocketIOServer

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from volleyio.metrics import (  # noqa: E402
    PROCESS,
    ClusterMetrics,
    LatencyHistogram,
    MetricsEndpoint,
    VolleyioCollector,
)

T0 = 100.0


# ---------------------------------------------------------------------------- sans-I/O counters


def request(method: str = "GET", sid: str | None = None, transport: str = "polling", upgrade: bool = False) -> HttpRequest:
    query = {"EIO": "4", "transport": transport}
    if sid is not None:
        query["sid"] = sid
    return HttpRequest(method, "/engine.io/", query, {}, websocket_upgrade=upgrade)


def test_engineio_traffic_per_transport_across_an_upgrade() -> None:
    server = EngineIOServer(ServerConfig(max_buffered_bytes=100))
    response = server.handle_request(request(), T0)
    assert isinstance(response, HttpResponse)
    sid = json.loads(response.body[1:])["sid"]
    # polling: one POST with two messages in, two messages out
    outcome = server.handle_request(request("POST", sid), T0)
    assert isinstance(outcome, ReadBody)
    server.post_body(sid, b"4hello\x1e4abc", T0)
    assert server.send(sid, "1234") and server.send(sid, b"\x00\x01")
    before = server.traffic()
    # bytes in: what arrived (the POST body, separators included); bytes out: the messages
    assert before["polling"] == {"messages_in": 2, "messages_out": 2, "bytes_in": 11, "bytes_out": 6}
    # upgrade, then traffic on the WebSocket counts for "websocket"
    accepted = server.handle_request(request(sid=sid, transport="websocket", upgrade=True), T0)
    assert isinstance(accepted, AcceptWebSocket) and accepted.channel is not None
    channel = accepted.channel
    channel.receive("2probe", T0)
    channel.receive("5", T0)
    channel.receive("4ws-in", T0)
    server.send(sid, "ws-out")
    traffic = server.traffic()
    # the probe's frames ("2probe", "5") arrived while the session was still on polling
    assert traffic["polling"] == {**before["polling"], "bytes_in": 11 + 7}
    assert traffic["websocket"] == {"messages_in": 1, "messages_out": 1, "bytes_in": 6, "bytes_out": 6}
    # the session's own statistics are not reset by the upgrade
    session = server.session(sid)
    assert session is not None and session.statistics()["messages_in"] == 3
    # a second session, WebSocket-only, then closed as a slow consumer: its traffic stays counted
    accepted = server.handle_request(request(transport="websocket", upgrade=True), T0)
    assert isinstance(accepted, AcceptWebSocket) and accepted.channel is not None and accepted.sid is not None
    accepted.channel.receive("4x", T0)
    assert not server.send(accepted.sid, "y" * 101)  # over max_buffered_bytes
    assert server.closes() == {"slow consumer": 1}
    final = server.traffic()
    assert final["websocket"]["messages_in"] == 2 and final["websocket"]["bytes_in"] == 8
    stats = server.statistics()
    assert stats["upgrades"] == 1 and stats["upgrades_failed"] == 0


def test_failed_upgrades_are_counted() -> None:
    server = EngineIOServer()
    response = server.handle_request(request(), T0)
    assert isinstance(response, HttpResponse)
    sid = json.loads(response.body[1:])["sid"]
    accepted = server.handle_request(request(sid=sid, transport="websocket", upgrade=True), T0)
    assert isinstance(accepted, AcceptWebSocket) and accepted.channel is not None
    accepted.channel.receive("4not a probe", T0)  # aborts the upgrade
    accepted = server.handle_request(request(sid=sid, transport="websocket", upgrade=True), T0)
    assert isinstance(accepted, AcceptWebSocket) and accepted.channel is not None
    accepted.channel.connection_lost(T0)  # the probe's WebSocket went away
    assert server.statistics()["upgrades_failed"] == 2
    assert server.session(sid) is not None  # polling goes on
    server.close(sid, T0)
    assert server.closes() == {"forced close": 1}


def test_latency_histogram_is_cumulative() -> None:
    histogram = LatencyHistogram((0.01, 0.1, 1.0))
    for value in (0.005, 0.01, 0.05, 0.5, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.01", 2), ("0.1", 3), ("1.0", 4), ("+Inf", 5)]
    assert histogram.count == 5 and histogram.sum == pytest.approx(3.565)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_cluster_metrics_are_exported_from_the_adapter() -> None:
    class ClusterAdapter(InMemoryAdapter):
        def __init__(self) -> None:
            super().__init__()
            self.cluster_metrics = ClusterMetrics()

    adapter = ClusterAdapter()
    sio = SocketIOServer(adapter=adapter)
    adapter.cluster_metrics.set_nodes(3)
    adapter.cluster_metrics.observe_publish_lag(0.004)
    adapter.cluster_metrics.observe_publish_lag(-1)  # clock skew: counted as 0
    adapter.cluster_metrics.published(5)
    adapter.cluster_metrics.received()
    registry = prometheus_client.CollectorRegistry()
    registry.register(VolleyioCollector(sio, server_label="a"))
    values = samples(prometheus_client.generate_latest(registry).decode())
    assert values[("volleyio_cluster_nodes", (("server", "a"),))] == 3
    assert values[("volleyio_cluster_messages_published_total", (("server", "a"),))] == 5
    assert values[("volleyio_cluster_messages_received_total", (("server", "a"),))] == 1
    assert values[("volleyio_cluster_publish_lag_seconds_count", (("server", "a"),))] == 2
    assert values[("volleyio_cluster_publish_lag_seconds_bucket", (("le", "0.001"), ("server", "a")))] == 1
    assert values[("volleyio_cluster_publish_lag_seconds_bucket", (("le", "0.005"), ("server", "a")))] == 2


def test_cluster_metrics_of_an_adapter_kept_beside_the_core() -> None:
    """A server that hands the core only the adapter's room store and keeps the cluster
    adapter itself (``sio._cluster``) is exported too."""

    class Cluster:
        def __init__(self) -> None:
            self.cluster_metrics = ClusterMetrics()

    sio = SocketIOServer()
    cluster = Cluster()
    cluster.cluster_metrics.set_nodes(2)
    sio._cluster = cluster  # type: ignore[attr-defined]
    registry = prometheus_client.CollectorRegistry()
    registry.register(VolleyioCollector(sio))
    values = samples(prometheus_client.generate_latest(registry).decode())
    assert values[("volleyio_cluster_nodes", ())] == 2
    assert ("volleyio_cluster_nodes", ()) not in samples(
        prometheus_client.generate_latest(_registry_of(SocketIOServer())).decode()
    )


def _registry_of(sio: SocketIOServer) -> Any:
    registry = prometheus_client.CollectorRegistry()
    registry.register(VolleyioCollector(sio))
    return registry


def test_engineio_app_and_core_are_collected_and_summed() -> None:
    async def handler(session: Any) -> None:
        pass

    app = vt.EngineIOApp(handler)
    core = EngineIOServer()
    response = core.handle_request(request(), T0)
    assert isinstance(response, HttpResponse)
    registry = prometheus_client.CollectorRegistry()
    registry.register(VolleyioCollector(app, core, server_label="eio"))
    values = samples(prometheus_client.generate_latest(registry).decode())
    assert values[("volleyio_engineio_sessions", (("server", "eio"), ("transport", "polling")))] == 1
    assert values[("volleyio_engineio_sessions_opened_total", (("server", "eio"),))] == 1
    assert not any(name.startswith("volleyio_socketio") for name, _ in values)


def test_collector_refuses_unknown_objects() -> None:
    with pytest.raises(TypeError):
        VolleyioCollector(object())


# ---------------------------------------------------------------------------- end to end


async def http_get(port: int, target: str, method: str = "GET", headers: str = "") -> tuple[int, str, str]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    content_type = ""
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            content_type = value.strip()
    return status, content_type, body.decode()


@asynccontextmanager
async def serving(sio: SocketIOServer, **options: Any) -> AsyncIterator[vt.WebSocketServer]:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(sio.serve, "127.0.0.1", 0, **options))
            yield server
            nursery.cancel_scope.cancel()


async def test_metrics_endpoint_reports_sessions_traffic_acks() -> None:
    sio = SocketIOServer()
    release = trio.Event()

    @sio.on("ask")
    async def ask(socket: Socket) -> Any:
        return await socket.call("q")

    @sio.on("hold")
    async def hold(socket: Socket) -> None:
        sio.start_background_task(partial(socket.call, "wait"))
        await release.wait()

    async def pages(request: vt.Request) -> vt.Response | None:
        return vt.Response.text(200, "page") if request.path == "/page" else None

    async with serving(sio, metrics_path="/metrics", process_request=pages) as server:
        url = f"http://127.0.0.1:{server.port}"
        upgraded = vt.SocketIOClient(url)  # polling, then the upgrade
        polling = vt.SocketIOClient(url, transports=("polling",), namespaces=("/", "/other"))
        sio.of("/other")
        waiting = trio.Event()

        @upgraded.on("q")
        def answer() -> str:
            return "a"

        @polling.on("wait")
        def wait_forever() -> Any:
            waiting.set()
            return vt.NO_ACK

        async with upgraded, polling:
            with trio.fail_after(10):
                while upgraded.transport != "websocket":
                    await trio.sleep(0.02)
            for _ in range(3):
                assert await upgraded.call("ask") == "a"
            await polling.emit("hold")
            await waiting.wait()
            status, content_type, text = await http_get(server.port, "/metrics")
            assert status == 200 and content_type.startswith("text/plain")
            values = samples(text)
            assert values[("volleyio_engineio_sessions", (("transport", "polling"),))] == 1
            assert values[("volleyio_engineio_sessions", (("transport", "websocket"),))] == 1
            assert values[("volleyio_engineio_sessions_opened_total", ())] == 2
            assert values[("volleyio_engineio_upgrades_total", (("result", "ok"),))] == 1
            for transport in ("polling", "websocket"):
                assert values[("volleyio_engineio_messages_received_total", (("transport", transport),))] > 0
                assert values[("volleyio_engineio_messages_sent_total", (("transport", transport),))] > 0
                assert values[("volleyio_engineio_received_bytes_total", (("transport", transport),))] > 0
                assert values[("volleyio_engineio_sent_bytes_total", (("transport", transport),))] > 0
            # 3 "ask" events and 3 acks of "q" over the WebSocket, plus the CONNECT
            assert values[("volleyio_engineio_messages_received_total", (("transport", "websocket"),))] >= 6
            assert values[("volleyio_socketio_sockets", (("namespace", "/"),))] == 2
            assert values[("volleyio_socketio_sockets", (("namespace", "/other"),))] == 1
            assert values[("volleyio_socketio_acks_pending", ())] == 1  # "wait" is never answered
            assert values[("volleyio_socketio_acks_requested_total", ())] == 4
            assert values[("volleyio_socketio_ack_latency_seconds_count", ())] == 3
            assert values[("volleyio_socketio_ack_latency_seconds_bucket", (("le", "+Inf"),))] == 3
            assert values[("volleyio_http_connections", ())] >= 1
            # other requests still reach process_request and the Socket.IO mount
            assert (await http_get(server.port, "/page"))[2] == "page"
            assert (await http_get(server.port, "/metrics", "POST"))[0] == 405
            release.set()
        with trio.fail_after(10):
            while sio.statistics()["sockets"]:
                await trio.sleep(0.02)
        values = samples((await http_get(server.port, "/metrics"))[2])
        assert values[("volleyio_engineio_sessions", (("transport", "websocket"),))] == 0
        assert sum(v for (name, _), v in values.items() if name == "volleyio_engineio_disconnects_total") == 2
        assert values[("volleyio_socketio_acks_pending", ())] == 0
        # OpenMetrics when the scraper asks for it
        status, content_type, text = await http_get(
            server.port, "/metrics", headers="Accept: application/openmetrics-text; version=1.0.0\r\n"
        )
        assert content_type.startswith("application/openmetrics-text") and text.endswith("# EOF\n")


async def test_collector_in_an_application_registry_and_endpoint_chaining() -> None:
    sio = SocketIOServer()
    registry = prometheus_client.CollectorRegistry()
    registry.register(VolleyioCollector(sio))
    endpoint = MetricsEndpoint(registry, path="/internal/metrics")
    async with serving(sio, process_request=endpoint) as server:
        status, _, text = await http_get(server.port, "/internal/metrics")
        assert status == 200 and "volleyio_engineio_sessions" in text
        assert (await http_get(server.port, "/metrics"))[0] != 200
    async with serving(SocketIOServer(), metrics_path="/m", metrics_registry=registry) as server:
        # a registry passed in is served as it is (here: the first server's collector)
        assert "volleyio_socketio_sockets" in (await http_get(server.port, "/m"))[2]


async def test_plain_websocket_slow_consumer_is_counted() -> None:
    async def handler(ws: vt.WebSocketConnection) -> None:
        await ws.receive()
        for _ in range(200):
            if not ws.send_nowait(b"s" * 65536, limit=256 * 1024):
                break
        await ws.wait_closed()

    before = PROCESS.websocket_slow_consumer_closes
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(vt.serve, handler, "127.0.0.1", 0)
            collector = VolleyioCollector(server)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.send("go")
                with pytest.raises(vt.ConnectionClosed):
                    while True:
                        await ws.receive()
            registry = prometheus_client.CollectorRegistry()
            registry.register(collector)
            values = samples(prometheus_client.generate_latest(registry).decode())
            nursery.cancel_scope.cancel()
    assert PROCESS.websocket_slow_consumer_closes == before + 1
    assert values[("volleyio_slow_consumer_closes_total", (("layer", "websocket"),))] == before + 1
