"""python-engineio's AsyncClient as a scripted Engine.IO peer (twin of tests/js/eio_client.js).

Usage: python pye_client.py '<json config>' with the same keys as eio_client.js (url, path,
transports, expect_upgrade, steps, big, flood, pings, close, timeout_ms). It runs under
asyncio (python-engineio is asyncio-only), hence a subprocess of the trio tests.

Prints JSON lines; the last one is ``{"event": "done", ...}`` with every received
message described, the transport at the end, the number of server pings, the upgrade
outcome and the disconnect reason. Exit status 0 unless a step could not finish.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import engineio  # type: ignore[import-untyped]
from engineio import packet


def big_text(n: int, seed: str) -> str:
    unit = f"{seed}-volleyio-€-"
    return (unit * (n // len(unit) + 1))[:n]


def big_binary(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


def flood_item(prefix: str, i: int) -> str | bytes:
    """Every 4th flood message is binary, so batched payloads mix both kinds."""
    text = f"{prefix}:{i}"
    return text.encode() if i % 4 == 3 else text


def describe(data: str | bytes) -> dict[str, Any]:
    if isinstance(data, str):
        if len(data) <= 64:
            return {"type": "text", "text": data}
        return {"type": "text", "len": len(data), "sha256": hashlib.sha256(data.encode()).hexdigest()}
    if len(data) <= 64:
        return {"type": "binary", "hex": data.hex()}
    return {"type": "binary", "len": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class CountingClient(engineio.AsyncClient):  # type: ignore[misc]
    """Counts the server's pings (the library answers them but reports nothing)."""

    pings = 0
    ping_event: asyncio.Event | None = None

    async def _receive_packet(self, pkt: packet.Packet) -> None:
        if pkt.packet_type == packet.PING:
            self.pings += 1
            if self.ping_event is not None:
                self.ping_event.set()
        await super()._receive_packet(pkt)


async def run(config: dict[str, Any], result: dict[str, Any]) -> None:
    client = CountingClient(request_timeout=10)
    client.ping_event = asyncio.Event()
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    closed = asyncio.Event()

    @client.on("message")  # type: ignore[untyped-decorator]
    def on_message(data: str | bytes) -> None:
        item = describe(data)
        result["received"].append(item)
        messages.put_nowait(item)

    @client.on("connect")  # type: ignore[untyped-decorator]
    def on_connect() -> None:
        # Runs before the client attempts its upgrade (inside connect()).
        result["open"] = {"transport": client.transport(), "sid": client.sid}

    @client.on("disconnect")  # type: ignore[untyped-decorator]
    def on_disconnect(reason: str) -> None:
        result["close"] = {"reason": reason}
        emit({"event": "close", "reason": reason})
        closed.set()

    async def expect(n: int) -> None:
        for _ in range(n):
            getter = asyncio.ensure_future(messages.get())
            closing = asyncio.ensure_future(closed.wait())
            done, _pending = await asyncio.wait({getter, closing}, return_when=asyncio.FIRST_COMPLETED)
            closing.cancel()
            if getter not in done:
                getter.cancel()
                raise RuntimeError(f"closed while waiting: {result['close']}")

    try:
        await script(client, config, result, expect, closed)
    finally:
        result["pings"] = client.pings
        if result["transport"] is None and client.state == "connected":
            result["transport"] = client.transport()
        if client.state == "connected":
            await client.disconnect(abort=True)


async def script(
    client: CountingClient, config: dict[str, Any], result: dict[str, Any],
    expect: Callable[[int], Awaitable[None]], closed: asyncio.Event,
) -> None:
    assert client.ping_event is not None
    steps = config.get("steps", ["basic"])
    big = config.get("big", 524288)
    flood = config.get("flood", 200)
    path = config.get("path", "/engine.io/").strip("/")
    # transports None: the library's default (polling, then an upgrade attempt).
    await client.connect(config["url"], transports=config.get("transports"), engineio_path=path)
    result["handshake"] = {
        "upgrades": client.upgrades, "pingInterval": round(client.ping_interval * 1000),
        "pingTimeout": round(client.ping_timeout * 1000),
    }
    emit({"event": "open", "transport": client.transport()})
    if config.get("expect_upgrade"):
        # The client upgrades inside connect(); a refused upgrade leaves it on polling.
        ok = client.transport() == "websocket"
        result["upgrade"] = {"ok": ok, "transport": client.transport()}
    if "basic" in steps:
        await client.send("héllo ✓")
        await client.send(bytes(range(256)))
        await expect(2)
        result["steps_done"].append("basic")
    if "big" in steps:
        await client.send("please:big")
        await expect(2)
        # One at a time: the client batches queued packets into one POST, and both
        # together would exceed maxPayload.
        await client.send(big_text(big, "c"))
        await expect(1)
        await client.send(big_binary(big, 3))
        await expect(1)
        result["steps_done"].append("big")
    if "flood" in steps:
        await client.send(f"please:flood:{flood}")
        for i in range(flood):
            await client.send(flood_item("c", i))
        await expect(flood + 1)
        result["steps_done"].append("flood")
    if "limit" in steps:
        await client.send("L" * (config["max_payload"] - 1))
        await expect(1)
        result["steps_done"].append("limit")
    if "heartbeat" in steps:
        start = client.pings
        while client.pings - start < config["pings"]:
            client.ping_event.clear()
            waiter = asyncio.ensure_future(client.ping_event.wait())
            closing = asyncio.ensure_future(closed.wait())
            await asyncio.wait({waiter, closing}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            closing.cancel()
            if closed.is_set():
                raise RuntimeError(f"closed during heartbeat: {result['close']}")
        result["pings_idle"] = client.pings - start
        await client.send("after-idle")
        await expect(1)
        result["steps_done"].append("heartbeat")
    result["transport"] = client.transport()
    result["steps_done"].append("close")
    if config.get("close") in ("server", "oversize", "wait"):
        if config["close"] == "server":
            await client.send("please:close")
        elif config["close"] == "oversize":
            await client.send("O" * config["max_payload"])  # one byte too many
        else:
            emit({"event": "ready"})  # the test freezes us (SIGSTOP)
        await closed.wait()
        # Let the read loop finish its clean-up after the disconnect event.
        await client.wait()
    else:
        await client.disconnect()


async def main() -> int:
    config = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result: dict[str, Any] = {
        "event": "done", "received": [], "transport": None, "pings": 0, "open": None, "upgrade": None,
        "close": None, "error": None, "steps_done": [],
    }
    status = 0
    try:
        await asyncio.wait_for(run(config, result), config.get("timeout_ms", 20000) / 1000)
    except asyncio.TimeoutError:
        result["error"] = "timeout"
        status = 2
    except Exception as exc:  # reported to the test, which fails on it
        result["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    emit(result)
    return status


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
