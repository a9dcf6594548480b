"""python-socketio's AsyncClient driving a Socket.IO server that implements the scenario
contract documented in tests/js/sio_ref_server.js (Node reference) and built by
tests/test_socketio_interop.py (volleyio). python-socketio is asyncio, so this runs in its
own process (``sys.executable pys_client.py '<json config>'``).

config: {"url", "transports": ["polling"] | ["websocket"] | ["polling", "websocket"],
         "scenario": "connect" | "acks" | "binary" | "rooms" | "disconnect" | "order", "many": 500}
Prints JSON lines; the last one is {"ok": true, "scenario": ..., ...} or {"error": ...};
exit status 0 only on success. Hard cap 40 s.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

CONFIG: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
TRANSPORTS: list[str] = CONFIG.get("transports") or ["polling", "websocket"]
UPGRADE = len(TRANSPORTS) > 1
MANY: int = CONFIG.get("many") or 500
TAG: str = CONFIG.get("tag") or secrets.token_hex(4)  # room names unique per run
STEP_TIMEOUT = 15.0
clients: list[socketio.AsyncClient] = []


def canon(value: Any) -> Any:
    """Same shape as sio_client.js's canon(): bytes become {"$bin": hex} or length/sum."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        if len(b) <= 32:
            return {"$bin": b.hex()}
        return {"$bin_len": len(b), "$bin_sum": sum(b) % 65536}
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    return value


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def equal(actual: Any, expected: Any, what: str) -> None:
    check(canon(actual) == canon(expected), f"{what}: expected {canon(expected)!r}, got {canon(actual)!r}")


def reply_args(reply: Any) -> list[Any]:
    """AsyncClient.call returns None (no args), the value (one arg) or a tuple (several)."""
    if reply is None:
        return []
    if isinstance(reply, tuple):
        return list(reply)
    return [reply]


async def call(sio: socketio.AsyncClient, event: str, *args: Any, namespace: str = "/") -> list[Any]:
    data: Any = args if len(args) != 1 else args[0]
    if not args:
        data = None
    return reply_args(await sio.call(event, data, namespace=namespace, timeout=STEP_TIMEOUT))


async def open_client(auth: Any, namespaces: list[str] | None = None,
                      on_setup: Callable[[socketio.AsyncClient], None] | None = None) -> socketio.AsyncClient:
    sio = socketio.AsyncClient(reconnection=False)
    clients.append(sio)
    if on_setup is not None:
        on_setup(sio)
    await sio.connect(CONFIG["url"], auth=auth, transports=TRANSPORTS, namespaces=namespaces or ["/"],
                      wait_timeout=STEP_TIMEOUT)
    return sio


def transport_of(sio: socketio.AsyncClient) -> str:
    name: str = sio.transport()
    # The python client upgrades inside connect(): in upgrade mode it must be on WebSocket by now.
    if UPGRADE:
        check(name == "websocket", f"upgrade mode but still on {name}")
    return name


async def refusal(auth: Any, namespace: str) -> dict[str, Any]:
    seen: list[Any] = []

    def setup(sio: socketio.AsyncClient) -> None:
        sio.on("connect_error", lambda data=None: seen.append(data), namespace=namespace)

    try:
        await open_client(auth, [namespace], setup)
    except socketio.exceptions.ConnectionError as exc:
        check(len(seen) == 1, f"one connect_error expected on {namespace}, got {seen!r}")
        data = seen[0] if isinstance(seen[0], dict) else {"message": seen[0]}
        return {"message": data.get("message"), "data": data.get("data"), "raised": str(exc)}
    raise AssertionError(f"connecting {namespace} with {auth!r} should have been refused")


async def gone(probe: Callable[[], Awaitable[list[Any]]]) -> bool:
    return all(reason is not None for reason in await probe())


async def wait_for(what: str, probe: Callable[[], Awaitable[Any]], expected: Any) -> Any:
    # Eventual consistency across connections (another connection's disconnect): bounded polling.
    last: Any = None
    for _ in range(300):
        last = await probe()
        if last == expected:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what}: expected {expected!r}, last {last!r}")


async def scenario_connect() -> dict[str, Any]:
    auth = {"token": "good", "user": "alice"}
    sio = await open_client(auth, ["/", "/admin"])
    transport = transport_of(sio)
    [me] = await call(sio, "whoami")
    [admin_me] = await call(sio, "whoami", namespace="/admin")
    equal(me["auth"], auth, "auth seen by the server")
    check(me["nsp"] == "/" and admin_me["nsp"] == "/admin", "namespaces")
    check(me["sid"] == sio.get_sid("/") and admin_me["sid"] == sio.get_sid("/admin"), "socket ids")
    check(me["eio"] == admin_me["eio"] == sio.eio.sid, "both namespaces share one Engine.IO session")
    check(me["sid"] != admin_me["sid"] and me["sid"] != me["eio"], "distinct socket ids")
    check(me["transport"] == transport, "server and client agree on the transport")
    unknown = await refusal({"token": "good"}, "/nope")
    refused = await refusal({"token": "bad"}, "/")
    refused_admin = await refusal({"token": "bad"}, "/admin")
    equal(await call(sio, "echo", "still here"), ["still here"], "echo after refusals")
    await sio.disconnect()
    return {"transport": transport, "me": me, "adminMe": admin_me, "unknown": unknown, "refused": refused,
            "refusedAdmin": refused_admin}


def answer_questions(sio: socketio.AsyncClient, asked: list[int]) -> None:
    async def question(i: int, payload: Any) -> dict[str, Any]:
        asked.append(i)
        return {"i": i, "payload": payload, "from": "python"}

    sio.on("question", question)


async def scenario_acks() -> dict[str, Any]:
    asked: list[int] = []
    sio = await open_client({"token": "good"}, on_setup=lambda s: answer_questions(s, asked))
    transport = transport_of(sio)
    args = ["héllo ✓", 42, 1.5, True, None, {"a": [1, 2, {"b": "c"}]}, ["x"]]
    echoed = await call(sio, "echo", *args)
    equal(echoed, args, "echo")
    empty = await call(sio, "echo")
    equal(empty, [], "empty ack")
    [answers] = await call(sio, "ask", 3, {"q": "why"})
    equal(answers, [{"i": i, "payload": {"q": "why"}, "from": "python"} for i in range(3)], "server->client acks")
    replies = await asyncio.gather(*(call(sio, "echo", i, f"m{i}") for i in range(MANY)))
    for i, reply in enumerate(replies):
        equal(reply, [i, f"m{i}"], f"concurrent echo {i}")
    [many_answers] = await call(sio, "ask", MANY, "bulk")
    equal(many_answers, [{"i": i, "payload": "bulk", "from": "python"} for i in range(MANY)], "many server calls")
    final = sio.transport()
    await sio.disconnect()
    return {"transport": transport, "final": final, "echoed": echoed, "empty": empty, "answers": answers,
            "many": MANY, "questions": len(asked)}


async def scenario_binary() -> dict[str, Any]:
    sio = await open_client({"token": "good"}, on_setup=lambda s: answer_questions(s, []))
    transport = transport_of(sio)
    small = bytes([0, 1, 2, 255])
    mid = bytes([7]) * 1000
    big = bytes(i % 251 for i in range(100_000))
    one = bytes([42])
    args = [small, {"nested": [mid, "txt", {"deeper": one}]}, "plain", big]
    echoed = await call(sio, "echo", *args)
    equal(echoed, args, "binary echo")
    check(isinstance(echoed[0], bytes), "attachments come back as bytes")
    got_event: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    def echoed_event(*a: Any) -> None:
        if not got_event.done():
            got_event.set_result(list(a))

    sio.on("echoed", echoed_event)
    [accepted] = await call(sio, "echo-event", small, {"list": [mid, one]})
    event = await asyncio.wait_for(got_event, STEP_TIMEOUT)
    check(accepted is True, "echo-event acked")
    equal(event, [small, {"list": [mid, one]}], "server->client binary event")
    payload = {"blob": small, "more": [one, mid]}
    [answers] = await call(sio, "ask", 2, payload)
    equal(answers, [{"i": i, "payload": payload, "from": "python"} for i in range(2)], "binary acks both ways")
    # Many binary packets in flight: attachments of consecutive packets share poll
    # payloads and WebSocket batches, and must still be reassembled per packet.
    bin_many = min(MANY, 200)

    def bin_args(i: int) -> list[Any]:
        return [bytes([i % 256, 1]), {"x": bytes([i % 256]) * (300 + i)}, f"n{i}", bytes([i >> 8, 2])]

    bin_replies = await asyncio.gather(*(call(sio, "echo", *bin_args(i)) for i in range(bin_many)))
    for i, reply in enumerate(bin_replies):
        equal(reply, bin_args(i), f"binary echo {i}")
    final = sio.transport()
    await sio.disconnect()
    return {"transport": transport, "final": final, "echoed": canon(echoed), "event": canon(event),
            "answers": canon(answers), "binMany": bin_many}


async def scenario_rooms() -> dict[str, Any]:
    got: dict[str, list[Any]] = {"c1": [], "c2": [], "c3": []}
    arrived = {name: asyncio.Event() for name in got}

    def listener(name: str) -> Callable[[socketio.AsyncClient], None]:
        def setup(sio: socketio.AsyncClient) -> None:
            def bcast(*args: Any) -> None:
                got[name].append(canon(list(args)))
                arrived[name].set()

            sio.on("bcast", bcast)
            sio.on("poll", lambda: name)

        return setup

    c1, c2, c3 = await asyncio.gather(*(open_client({"token": "good", "user": n}, on_setup=listener(n))
                                        for n in ("c1", "c2", "c3")))
    transport = transport_of(c1)
    red, blue = f"red-{TAG}", f"blue-{TAG}"
    joins = [(await call(c1, "join", red))[0], (await call(c2, "join", red))[0], (await call(c3, "join", blue))[0]]
    equal(joins, [1, 2, 1], "member counts after joins")
    await call(c1, "broadcast", red, "to red", bytes([9, 9]))
    await asyncio.wait_for(asyncio.gather(arrived["c1"].wait(), arrived["c2"].wait()), STEP_TIMEOUT)
    # c3 is not in red: its own blue broadcast must be the only thing it ever received.
    await call(c3, "broadcast", blue, "to blue")
    await asyncio.wait_for(arrived["c3"].wait(), STEP_TIMEOUT)
    equal(got["c3"], [["to blue"]], "c3 deliveries")
    equal(got["c1"], [["to red", {"$bin": "0909"}]], "c1 deliveries")
    equal(got["c2"], got["c1"], "c2 deliveries")
    # Broadcast with acks: the server collects one answer per member of red.
    [polled] = await call(c1, "poll-room", red)
    equal(polled, ["c1", "c2"], "answers to the room poll")
    c2_sid, c3_sid = c2.get_sid("/"), c3.get_sid("/")
    await c2.disconnect()  # sends 41 then closes Engine.IO
    red_after = await wait_for("red size", lambda: call(c1, "room-size", red), [1])
    await c3.eio.disconnect(abort=True)  # drops the transport without a Socket.IO goodbye
    blue_after = await wait_for("blue size", lambda: call(c1, "room-size", blue), [0])

    async def reasons() -> list[Any]:
        [everything] = await call(c1, "reasons")
        return [everything.get(c2_sid), everything.get(c3_sid)]

    # python-socketio's disconnect() queues its DISCONNECT packets and then closes the
    # transport without waiting for them, so the server may see either reason for c2 (Node
    # says "transport close" most of the time); the scenario "disconnect" sends a lone
    # namespace DISCONNECT to check "client namespace disconnect" deterministically.
    reasons_seen = await wait_for("server-side reasons", lambda: gone(reasons), True)
    reasons_seen = await reasons()
    [own_room] = await call(c1, "room-size", c1.get_sid("/"))
    await c1.disconnect()
    return {"transport": transport, "joins": joins, "got": got, "polled": polled, "redAfter": red_after[0], "blueAfter": blue_after[0],
            "reasons": reasons_seen, "ownRoom": own_room, "c2": c2_sid, "c3": c3_sid}


async def scenario_disconnect() -> dict[str, Any]:
    client_reasons: dict[str, list[Any]] = {"/": [], "/admin": []}

    kicked_events: list[list[Any]] = []

    def setup(sio: socketio.AsyncClient) -> None:
        sio.on("kicked", lambda *args: kicked_events.append(list(args)), namespace="/admin")
        for nsp in client_reasons:
            sio.on("disconnect", lambda reason=None, nsp=nsp: client_reasons[nsp].append(reason), namespace=nsp)

    sio = await open_client({"token": "good"}, ["/", "/admin"], setup)
    transport = transport_of(sio)
    kicked = sio.get_sid("/admin")
    main_sid = sio.get_sid("/")
    await sio.emit("kick-me", namespace="/admin")

    async def kick_seen() -> list[Any]:
        return [kicked_events, len(client_reasons["/admin"])]

    await wait_for("client sees the kick", kick_seen, [[["bye"]], 1])
    equal(await call(sio, "echo", "after kick"), ["after kick"], "main namespace after the kick")
    check(sio.connected and sio.eio.state == "connected", "the Engine.IO session survives the kick")
    check(sio.namespaces.keys() == {"/"}, f"only / left: {list(sio.namespaces)}")

    # A client-side namespace disconnect. python-socketio has no public per-namespace
    # disconnect, so send its own DISCONNECT packet for /admin while / stays connected.
    other = await open_client({"token": "good"}, ["/", "/admin"])
    left = other.get_sid("/admin")
    await other._send_packet(other.packet_class(socketio.packet.DISCONNECT, namespace="/admin"))

    async def left_reason() -> Any:
        [everything] = await call(other, "reasons")
        return everything.get(left)

    left_seen = await wait_for("server-side reason of the namespace disconnect", left_reason,
                               "client namespace disconnect")
    equal(await call(other, "echo", "after leave"), ["after leave"], "main namespace after leaving /admin")
    del other.namespaces["/admin"]  # keep the client's bookkeeping in line with what it sent
    await sio.disconnect()

    async def reasons() -> list[Any]:
        [everything] = await call(other, "reasons")
        return [everything.get(kicked), everything.get(main_sid)]

    await wait_for("server-side reasons", lambda: gone(reasons), True)
    server_reasons = await reasons()
    check(server_reasons[0] == "server namespace disconnect", f"kick reason {server_reasons[0]!r}")
    await other.disconnect()
    return {"transport": transport, "kicked": kicked, "mainSid": main_sid, "left": left,
            "clientReasons": client_reasons, "reasons": server_reasons, "leftReason": left_seen}


async def order_round(sio: socketio.AsyncClient, start: int, n: int) -> None:
    """Plain events up, a burst of events down, acks: one round of ordered traffic."""
    for i in range(start, start + n):
        await sio.emit("seq", i)
    echoes = asyncio.gather(*(call(sio, "echo", start + i) for i in range(min(50, n))))
    equal(await call(sio, "ticks", n), [n], "ticks acked")
    for i, reply in enumerate(await echoes):
        equal(reply, [start + i], "echo during the round")


async def scenario_order() -> dict[str, Any]:
    ticks: list[int] = []
    bursts: list[int] = []
    n = min(MANY, 300)

    def burst(i: int, blob: Any = None) -> None:
        # Every third burst event carries a 1-byte attachment.
        expected = bytes([i % 256]) if i % 3 == 0 else None
        bursts.append(i if blob == expected else -1 - i)

    def setup(sio: socketio.AsyncClient) -> None:
        sio.on("tick", lambda i: ticks.append(i))
        sio.on("burst", burst)

    # The server starts a burst of events the moment the namespace connects.
    sio = await open_client({"token": "good", "burst": n}, on_setup=setup)
    transport = transport_of(sio)
    await order_round(sio, 0, n)
    await order_round(sio, n, n)
    [log] = await call(sio, "seq-log")
    equal(log, list(range(2 * n)), "server saw events in order")
    # Handlers may run as tasks (python-engineio's async_handlers): wait for the stragglers.
    async def tick_count() -> int:
        return len(ticks)

    await wait_for("ticks", tick_count, 2 * n)
    equal(ticks, list(range(n)) * 2, "client saw events in order")
    equal(bursts, list(range(n)), "the connect-time burst arrived in order")
    final = sio.transport()
    await sio.disconnect()
    return {"transport": transport, "final": final, "n": n}


SCENARIOS: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
    "order": scenario_order,
    "connect": scenario_connect,
    "acks": scenario_acks,
    "binary": scenario_binary,
    "rooms": scenario_rooms,
    "disconnect": scenario_disconnect,
}


async def main() -> int:
    try:
        result = await asyncio.wait_for(SCENARIOS[CONFIG["scenario"]](), 40)
    except BaseException:  # reported as JSON; the exit status carries the failure
        print(json.dumps({"error": traceback.format_exc()}), flush=True)
        code = 1
    else:
        print(json.dumps({"ok": True, "scenario": CONFIG["scenario"], "transports": TRANSPORTS, **result}), flush=True)
        code = 0
    for sio in clients:
        try:
            await asyncio.wait_for(sio.eio.disconnect(abort=True), 2)
        except Exception:  # already gone
            pass
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
