"""Interactive clients for ``python -m volleyio client URL``.

* ``ws://`` / ``wss://`` URLs: a plain WebSocket client for the demo's ``/ws`` door; a
  line typed is sent as a chat message (``{"type": "chat", "name": ..., "text": line}``),
  a line that is already a JSON object is sent as it is, and ``--raw`` sends every line
  verbatim (for other servers). Each message received is printed. The demo's counters
  arrive only with ``--stats`` (which asks for them: ``?stats=1``).
* ``http://`` / ``https://`` URLs (or ``--socketio``): a Socket.IO client. A line typed
  is emitted as the demo's ``chat`` event (``{"name": ..., "text": line}``); commands
  start with ``/`` (``/help`` lists them). Every event received is printed as
  ``EVENT ARG...`` with each argument as JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import trio

from ..errors import VolleyError
from ..trio import (
    ConnectionClosed,
    EngineIOClientConnection,
    EngineIOClosed,
    EngineIOUpgradeError,
    SendBufferFullError,
    SocketIOClient,
    SocketIODisconnectedError,
    connect,
)

HELP = """\
commands:
  TEXT                 emit "chat" {"name": NAME, "text": TEXT} (the demo's chat line)
  /emit EVENT [JSON]   emit EVENT with one JSON argument (none if omitted)
  /call EVENT [JSON]   emit EVENT and print the acknowledgement
  /name NAME           change the name used for chat lines
  /transport           print the transport in use
  /quit                disconnect (so does end of input, Ctrl-D)"""

#: How long ``/call`` and chat lines wait for an acknowledgement.
ACK_TIMEOUT = 10.0


def is_socketio_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https")


def socketio_base_url(url: str) -> str:
    """``ws(s)://`` becomes ``http(s)://`` (Socket.IO always starts with an HTTP URL)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


def format_event(event: str, args: Sequence[Any]) -> str:
    shown = [_show(arg) for arg in args]
    return " ".join([event, *shown])


def _show(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_binary)
    except (TypeError, ValueError):
        return repr(value)


def _binary(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    raise TypeError(type(value).__name__)


def _parse_argument(text: str) -> list[Any]:
    text = text.strip()
    if not text:
        return []
    return [json.loads(text)]


async def read_lines(source: TextIO) -> AsyncIterator[str]:
    """Lines of ``source`` without their newline, until end of input.

    Each read runs in a thread that is abandoned on cancellation, so the client can
    exit (the server went away) while nobody is typing.
    """
    while True:
        line = await trio.to_thread.run_sync(source.readline, abandon_on_cancel=True)
        if not line:
            return
        yield line.rstrip("\r\n")


def chat_line(line: str, name: str) -> str:
    """What the WebSocket client sends for a typed line: a JSON object as it is, any other
    text as the demo's chat message."""
    if line.lstrip().startswith("{"):
        return line
    return json.dumps({"type": "chat", "name": name, "text": line}, ensure_ascii=False)


def with_stats_query(url: str) -> str:
    """``url`` asking the demo's ``/ws`` door for the counters (``stats=1``)."""
    parts = urlsplit(url)
    query = f"{parts.query}&stats=1" if parts.query else "stats=1"
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


async def run_client(url: str, *, name: str = "cli", raw: bool = False, stats: bool = False) -> int:
    """The plain WebSocket client. Returns 0 after end of input, 1 when the server closed
    the connection (or it failed)."""
    quitting = False
    if stats:
        url = with_stats_query(url)
    try:
        async with connect(url) as ws:
            print(f"connected to {url}; type lines to send, Ctrl-D to close", file=sys.stderr)

            async def print_incoming(cancel_scope: trio.CancelScope) -> None:
                try:
                    while True:
                        message = await ws.receive()
                        print(message if isinstance(message, str) else f"<{len(message)} bytes> {message!r}", flush=True)
                except ConnectionClosed as exc:
                    if not quitting:
                        print(f"connection closed: {exc}", file=sys.stderr)
                cancel_scope.cancel()  # stop reading input: nobody to send it to

            async with trio.open_nursery() as nursery:
                nursery.start_soon(print_incoming, nursery.cancel_scope)
                async for line in read_lines(sys.stdin):
                    if not line.strip() and not raw:
                        continue  # a blank line is not a chat message
                    try:
                        await ws.send(line if raw else chat_line(line, name))
                    except ConnectionClosed:
                        break  # print_incoming reports it
                else:
                    quitting = True
                    await ws.close()
                    nursery.cancel_scope.cancel()
    except (VolleyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if quitting else 1


class _SocketIOConsole:
    """The Socket.IO side of the CLI: one client, stdin lines in, events out."""

    def __init__(self, client: SocketIOClient, namespace: str, name: str) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        # Plain lines are the demo's chat event, sent with an acknowledgement request so
        # a refusal can be shown. A server that never acknowledges "chat" would make
        # every line wait: after one timeout, lines are emitted without asking.
        self.chat_acks = True
        self.nursery: trio.Nursery | None = None
        self.quitting = False

    def register(self) -> None:
        client, namespace = self.client, self.namespace
        client.on("*", namespace, self.show_event)
        client.on("connect", namespace, self.connected)
        client.on("disconnect", namespace, lambda reason: _status(f"disconnected: {reason}"))
        client.on("connect_error", namespace, self.connect_error)

    def connect_error(self, error: Any) -> None:
        retrying = not getattr(error, "refused", True) and self.client.reconnection
        _status(f"connect error: {error}" + ("; retrying (Ctrl-C to stop)" if retrying else ""))

    def show_event(self, event: str, *args: Any) -> None:
        print(format_event(str(event), args), flush=True)

    def connected(self) -> None:
        _status(f"connected (socket id {self.client.sid(self.namespace)}, transport {self.client.transport})")
        eio = self.client.engineio
        if eio is not None and self.nursery is not None:
            try:
                self.nursery.start_soon(self.watch_upgrade, eio)
            except RuntimeError:  # the nursery is closing: we are leaving anyway
                pass

    async def watch_upgrade(self, eio: EngineIOClientConnection) -> None:
        try:
            await eio.wait_upgraded()
        except EngineIOUpgradeError as exc:
            if eio.transport == "polling" and "websocket" in eio.handshake.get("upgrades", ()):
                _status(f"{exc}: staying on long-polling")
            return
        except EngineIOClosed:
            return
        if "polling" in self.client.transports:
            _status("transport: websocket (upgraded)")

    async def handle_line(self, line: str) -> bool:
        """Act on one input line; False when the user asked to quit."""
        try:
            return await self._handle_line(line)
        except (SocketIODisconnectedError, SendBufferFullError) as exc:
            _status(f"not sent: {exc}")
            return True

    async def _handle_line(self, line: str) -> bool:
        if not line.strip():
            return True
        if not line.startswith("/"):
            await self.chat(line)
            return True
        command, _, rest = line[1:].partition(" ")
        if command in ("quit", "exit"):
            return False
        if command == "help":
            _status(HELP)
        elif command == "name" and rest.strip():
            self.name = rest.strip()
        elif command == "transport":
            _status(f"transport: {self.client.transport}")
        elif command in ("emit", "call") and rest.strip():
            event, _, argument = rest.strip().partition(" ")
            try:
                args = _parse_argument(argument)
            except ValueError as exc:
                _status(f"not JSON: {exc}")
                return True
            if command == "emit":
                await self.client.emit(event, *args, namespace=self.namespace)
            else:
                with trio.move_on_after(ACK_TIMEOUT) as scope:
                    answer = await self.client.call(event, *args, namespace=self.namespace)
                    print(format_event("ack", list(answer) if isinstance(answer, tuple) else [answer]), flush=True)
                if scope.cancelled_caught:
                    _status(f"no acknowledgement within {ACK_TIMEOUT:g} s")
        else:
            _status(f"unknown command {line.split()[0]!r}; /help lists them")
        return True

    async def chat(self, text: str) -> None:
        payload = {"name": self.name, "text": text}
        if not self.chat_acks:
            await self.client.emit("chat", payload, namespace=self.namespace)
            return
        with trio.move_on_after(ACK_TIMEOUT) as scope:
            answer = await self.client.call("chat", payload, namespace=self.namespace)
        if scope.cancelled_caught:
            self.chat_acks = False
            _status(f'no acknowledgement of "chat" within {ACK_TIMEOUT:g} s; further lines are sent without waiting')
        elif isinstance(answer, dict) and "error" in answer:
            _status(f"refused: {answer['error']}")


def _status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run_socketio_client(
    url: str,
    *,
    name: str = "cli",
    transport: str | None = None,
    namespace: str = "/",
    path: str = "/socket.io/",
    auth: dict[str, Any] | None = None,
    stdin: TextIO | None = None,
) -> int:
    """The Socket.IO client: lines in, events out. Returns the exit status."""
    client = SocketIOClient(
        url, path=path, namespaces=(namespace,), auth=auth,
        transports=(transport,) if transport else ("polling", "websocket"),
    )
    console = _SocketIOConsole(client, namespace, name)
    console.register()
    source = stdin if stdin is not None else sys.stdin
    try:
        async with client:
            _status(f"connected to {url}; type lines to send, /help for commands, Ctrl-D to close")
            async with trio.open_nursery() as nursery:
                console.nursery = nursery
                if client.engineio is not None:  # the first connection: its hook ran before this nursery
                    nursery.start_soon(console.watch_upgrade, client.engineio)

                async def read_input() -> None:
                    async for line in read_lines(source):
                        if not await console.handle_line(line):
                            break
                    console.quitting = True
                    await client.disconnect()

                nursery.start_soon(read_input)
                await client.wait_closed()
                nursery.cancel_scope.cancel()  # the input thread is abandoned, not waited for
    except (VolleyError, OSError) as exc:
        _status(f"error: {exc}")
        return 1
    if not console.quitting:
        # The server ended the session for good (or reconnection gave up).
        _status(f"closed: {client.close_reason}")
        return 1
    return 0
