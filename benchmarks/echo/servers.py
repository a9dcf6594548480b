"""Echo servers for benchmarks/echo, one per peer: ``python servers.py NAME PORT``.

Prints ``ready`` on stdout once listening, then serves until killed. Every server
echoes WebSocket messages (or raw bytes for the bare trio baselines) on 127.0.0.1
with compression off and the peers' default limits otherwise.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any


def ready() -> None:
    print("ready", flush=True)


def run_volleyio(port: int) -> None:
    import trio

    import volleyio.trio as vt

    async def echo(ws: vt.WebSocketConnection) -> None:
        receive, send = ws.receive, ws.send
        while True:
            await send(await receive())

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: vt.serve(echo, "127.0.0.1", port, backlog=8192,
                                                             task_status=task_status))
            ready()

    trio.run(main)


def run_volleyio_callbacks(port: int) -> None:
    import trio

    import volleyio.trio as vt

    class Echo(vt.MessageHandler):
        def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
            ws.send_nowait(message)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: vt.serve(Echo(), "127.0.0.1", port, backlog=8192,
                                                             task_status=task_status))
            ready()

    trio.run(main)


def run_websockets_asyncio(port: int) -> None:
    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", port, compression=None, backlog=8192):
            ready()
            await asyncio.Future()

    asyncio.run(main())


def run_websockets_trio(port: int) -> None:
    import trio
    from websockets.trio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: serve(echo, port, host="127.0.0.1", compression=None,
                                                          backlog=8192, task_status=task_status))
            ready()

    trio.run(main)


def run_picows(port: int) -> None:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
                transport.send(frame.msg_type, frame.get_payload_as_memoryview())

    async def main() -> None:
        server = await ws_create_server(lambda request: Echo(), "127.0.0.1", port, backlog=8192)
        ready()
        await server.serve_forever()

    asyncio.run(main())


def run_aiohttp(port: int) -> None:
    from aiohttp import WSMsgType, web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=8192)
        await site.start()
        ready()
        await asyncio.Future()

    asyncio.run(main())


def run_trio_websocket(port: int) -> None:
    import trio
    from trio_websocket import serve_websocket

    async def handler(request: Any) -> None:
        ws = await request.accept()
        while True:
            try:
                message = await ws.get_message()
            except Exception:  # noqa: BLE001 - ConnectionClosed ends the echo
                return
            await ws.send_message(message)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: serve_websocket(
                handler, "127.0.0.1", port, ssl_context=None, task_status=task_status))
            ready()

    trio.run(main)


def run_trio_stream(port: int) -> None:
    """Bare trio TCP echo over trio.SocketStream (receive_some / send_all)."""
    import trio

    async def echo(stream: trio.SocketStream) -> None:
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                await stream.send_all(data)
        except trio.BrokenResourceError:
            return

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: trio.serve_tcp(echo, port, host="127.0.0.1", backlog=8192,
                                                                   task_status=task_status))
            ready()

    trio.run(main)


def run_trio_socket(port: int) -> None:
    """Bare trio TCP echo on the socket layer: recv_into first, wait_readable when empty."""
    import trio

    async def echo(sock: socket.socket) -> None:
        buf = bytearray(65536)
        view = memoryview(buf)
        with sock:
            while True:
                try:
                    n = sock.recv_into(buf)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(sock)
                    continue
                except OSError:
                    return
                if n == 0:
                    return
                data = view[:n]
                while data:
                    try:
                        sent = sock.send(data)
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(sock)
                        continue
                    except OSError:
                        return
                    data = data[sent:]

    async def main() -> None:
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", port))
        lsock.listen(8192)
        lsock.setblocking(False)
        async with trio.open_nursery() as nursery:
            ready()
            while True:
                try:
                    conn, _ = lsock.accept()
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(lsock)
                    continue
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(echo, conn)

    trio.run(main)


SERVERS = {
    "volleyio": run_volleyio,
    "volleyio-callbacks": run_volleyio_callbacks,
    "websockets-asyncio": run_websockets_asyncio,
    "websockets-trio": run_websockets_trio,
    "picows": run_picows,
    "aiohttp": run_aiohttp,
    "trio-websocket": run_trio_websocket,
    "trio-tcp-stream": run_trio_stream,
    "trio-tcp-socket": run_trio_socket,
}

if __name__ == "__main__":
    SERVERS[sys.argv[1]](int(sys.argv[2]))
