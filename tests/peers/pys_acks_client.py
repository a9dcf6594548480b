"""python-socketio's AsyncClient checking acknowledgements against the server built by
tests/test_socketio_acks.py (``acks_server``; the events are described in
tests/js/sio_acks_client.js). python-socketio is asyncio, so this runs in its own process.

config: {"url", "transports": [...]}. Prints JSON lines; the last one is {"ok": true, ...}
or {"error": ...}; exit status 0 only on success. Hard cap 30 s.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from typing import Any

import socketio

CONFIG: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}


async def ask(client: socketio.AsyncClient, event: str, timeout: float, *args: Any) -> dict[str, Any]:
    """Like the JS driver's ask(): {"value": what call() returned} or {"timeout": True}."""
    try:
        value = await client.call(event, args if len(args) != 1 else args[0], timeout=timeout)
    except socketio.exceptions.TimeoutError:
        return {"timeout": True}
    return {"value": list(value) if isinstance(value, tuple) else value}


async def main() -> dict[str, Any]:
    client = socketio.AsyncClient(reconnection=False)

    @client.on("ask-empty")
    async def ask_empty() -> None:
        return None  # python-socketio sends 3<id>[]

    @client.on("ask-null")
    async def ask_null() -> tuple[None]:
        return (None,)  # a one-element tuple: 3<id>[null]

    @client.on("ask-two")
    async def ask_two() -> tuple[int, str]:
        return 1, "two"

    await client.connect(CONFIG["url"], transports=CONFIG.get("transports") or ["polling", "websocket"])
    out: dict[str, Any] = {"ok": True, "transport": client.transport()}
    started = time.monotonic()
    out["later"] = await ask(client, "later", 5, 7, 300)
    out["later_ms"] = (time.monotonic() - started) * 1000
    out["twice"] = await ask(client, "twice", 5)
    out["decline"] = await ask(client, "decline", 0.5)
    out["silent"] = await ask(client, "silent", 0.5)
    out["fail"] = await ask(client, "fail", 0.5)
    out["empty"] = await ask(client, "empty", 5)
    out["null"] = await ask(client, "null", 5)
    out["value"] = await ask(client, "value", 5, "x")
    out["probe"] = await ask(client, "probe", 5)
    out["after"] = await ask(client, "value", 5, "still here")
    out["transport_end"] = client.transport()
    await client.disconnect()
    return out


if __name__ == "__main__":
    try:
        result = asyncio.run(asyncio.wait_for(main(), 30))
    except BaseException:  # noqa: BLE001 - report anything as JSON
        print(json.dumps({"error": traceback.format_exc()}))
        sys.exit(1)
    print(json.dumps(result))
