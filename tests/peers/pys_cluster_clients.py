"""python-socketio AsyncClient sockets for tests/test_cluster_multiprocess.py, driven over
stdin/stdout JSON lines (the protocol of tests/js/cluster_clients.js)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import Any

import socketio


async def main() -> None:
    clients: list[socketio.AsyncClient] = []
    received: list[list[list[Any]]] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def out(obj: Any) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def plain(value: Any) -> Any:
        return {"$bin": base64.b64encode(value).decode()} if isinstance(value, bytes) else value

    async def connect(c: dict[str, Any]) -> dict[str, Any]:
        client = socketio.AsyncClient(reconnection=False)
        index = len(clients)
        clients.append(client)
        log: list[list[Any]] = []
        received.append(log)

        @client.on("*")
        async def anything(event: str, *args: Any) -> Any:
            if event == "q":
                return f"ack:{client.get_sid()}"
            log.append([event, *(plain(a) for a in args)])
            return None

        @client.on("disconnect")
        async def disconnect(*args: Any) -> None:
            log.append(["$disconnect", *(str(a) for a in args)])

        await client.connect(c["url"], transports=c.get("transports", ["polling", "websocket"]))
        return {"index": index, "sid": client.get_sid()}

    async def join(c: dict[str, Any]) -> Any:
        return await clients[c["index"]].call("join", c["room"], timeout=10)

    async def get_received(c: dict[str, Any]) -> Any:
        return received[c["index"]]

    commands = {"connect": connect, "join": join, "received": get_received}

    async def run(c: dict[str, Any]) -> None:
        try:
            out({"id": c["id"], "result": await commands[c["cmd"]](c)})
        except Exception as exc:  # noqa: BLE001
            out({"id": c["id"], "error": f"{exc.__class__.__name__}: {exc}"})

    out({"ready": True})
    tasks = set()
    while True:
        line = await reader.readline()
        if not line:
            break
        if line.strip():
            task = asyncio.ensure_future(run(json.loads(line)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    for client in clients:
        if client.connected:
            await client.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
