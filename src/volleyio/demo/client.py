"""Interactive WebSocket client: each line typed is sent, each message received is printed."""

from __future__ import annotations

import sys

import trio

from ..errors import VolleyError
from ..trio import ConnectionClosed, connect


async def run_client(url: str) -> int:
    try:
        async with connect(url) as ws:
            print(f"connected to {url}; type lines to send, Ctrl-D to close", file=sys.stderr)

            async def print_incoming() -> None:
                try:
                    async for message in ws:
                        print(message if isinstance(message, str) else f"<{len(message)} bytes> {message!r}")
                except ConnectionClosed:
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(print_incoming)
                stdin = trio.wrap_file(sys.stdin)
                async for line in stdin:
                    await ws.send(line.rstrip("\n"))
                await ws.close()
                nursery.cancel_scope.cancel()
    except ConnectionClosed as exc:
        print(f"connection closed: {exc}", file=sys.stderr)
        return 1
    except (VolleyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
