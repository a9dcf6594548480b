"""python -m volleyio: the demo server (the default command), an interactive client, and
the installation's details for a bug report (info)."""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
from typing import Any

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _json_object(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("the auth payload must be a JSON object")
    return value


def _namespace(text: str) -> str:
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError("a namespace starts with '/'")
    return text


def _add_listen_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    # On the subcommand the options are SUPPRESSed so that `python -m volleyio --port 9000`
    # and `python -m volleyio demo --port 9000` both work without one overriding the other.
    host_default: Any = DEFAULT_HOST if defaults else argparse.SUPPRESS
    port_default: Any = DEFAULT_PORT if defaults else argparse.SUPPRESS
    parser.add_argument("--host", default=host_default, help=f"address to listen on (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=port_default, help=f"port to listen on (default: {DEFAULT_PORT})")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m volleyio", description=__doc__)
    _add_listen_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command")

    demo = commands.add_parser(
        "demo", help="run the demo server (the default command)",
        description="Chat room and live counters over Socket.IO (long-polling, upgraded to WebSocket) "
        "and plain WebSocket (/ws); open http://HOST:PORT/ in a browser.",
    )
    _add_listen_options(demo, defaults=False)

    client = commands.add_parser(
        "client", help="interactive client: lines in, messages/events out",
        description="ws:// and wss:// URLs: plain WebSocket, e.g. the demo's ws://HOST:PORT/ws (a line "
        "is sent as a chat message; --raw sends lines as they are). "
        "http:// and https:// URLs, or --socketio: Socket.IO (lines are emitted as the demo's "
        '"chat" event; /help lists the commands). The demo\'s counters are printed only with --stats.',
    )
    client.add_argument("url", help="ws://, wss://, http:// or https:// URL")
    client.add_argument("--socketio", action="store_true", help="use Socket.IO even for a ws:// or wss:// URL")
    client.add_argument("--transport", choices=("polling", "websocket"),
                        help="Socket.IO: use only this transport (default: long-polling, then upgrade to WebSocket)")
    client.add_argument("--namespace", type=_namespace, default="/", help="Socket.IO namespace (default: /)")
    client.add_argument("--path", default="/socket.io/", help="Socket.IO endpoint path (default: /socket.io/)")
    client.add_argument("--name", default="cli", help="name used for chat lines (default: cli)")
    client.add_argument("--stats", action="store_true", help="ask the demo for its counters and print them")
    client.add_argument("--raw", action="store_true",
                        help="WebSocket: send each line as it is (not as a chat message), for other servers")
    client.add_argument("--auth", type=_json_object, default=None,
                        help="Socket.IO: CONNECT payload, a JSON object")

    commands.add_parser("info", help="print what a bug report needs: versions, speedups and their SIMD "
                        "kernels, Python and platform")
    return parser


def info_text() -> str:
    """What a bug report needs: versions, the speedups in use and their kernels, platform."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__, _speedups

    def dist_version(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    kernels = _speedups.kernels()
    lines = [
        f"volleyio {__version__}",
        f"speedups: {_speedups.IMPLEMENTATION} (mask: {kernels['mask']}, UTF-8: {kernels['utf8']})",
    ]
    if _speedups.IMPLEMENTATION != "compiled":
        if _speedups._extensions_disabled():
            lines.append("  (VOLLEYIO_NO_EXTENSIONS is set: the pure-Python twins were asked for)")
        elif _speedups.build_status() is not None:
            status = _speedups.build_status() or ""
            detail = f"the build {status}" if status.startswith("failed") else f"{status}, {_speedups.LOAD_ERROR}"
            lines.append(f"  compiled module expected but not loaded ({detail})")
        else:
            lines.append("  (no compiled module was built for this installation)")
    gil = getattr(sys, "_is_gil_enabled", None)
    threading = "" if gil is None else f", GIL {'enabled' if gil() else 'disabled'}"
    lines += [
        f"Python: {platform.python_implementation()} {platform.python_version()}{threading} ({sys.executable})",
        f"platform: {platform.platform()} ({platform.machine()})",
        f"trio {dist_version('trio')}, h11 {dist_version('h11')}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command = args.command or "demo"
    if command == "info":
        print(info_text())
        return 0
    if command == "client":
        from .demo.client import is_socketio_url, run_client, run_socketio_client, socketio_base_url

        socketio = args.socketio or is_socketio_url(args.url)
        if socketio and args.raw:
            parser.error("--raw is a WebSocket option: use a ws:// or wss:// URL")
        if not socketio and (args.transport or args.auth is not None or args.namespace != "/"):
            parser.error("--transport, --namespace and --auth are Socket.IO options: "
                         "use an http(s):// URL or --socketio")
        try:
            if socketio:
                auth = args.auth
                if args.stats:
                    auth = {**(auth or {}), "stats": True}
                return trio.run(
                    lambda: run_socketio_client(
                        socketio_base_url(args.url), name=args.name, transport=args.transport,
                        namespace=args.namespace, path=args.path, auth=auth,
                    )
                )
            return trio.run(lambda: run_client(args.url, name=args.name, raw=args.raw, stats=args.stats))
        except KeyboardInterrupt:
            return 130
    from .demo.server import run_demo

    try:
        trio.run(run_demo, args.host, args.port)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - only listening errors are explained, see below
        error = _listen_error(exc)
        if error is None:
            raise
        print(f"error: {_explain_listen_error(error, args.host, args.port)}", file=sys.stderr)
        return 1
    return 0


def _listen_error(exc: BaseException) -> OSError | None:
    """The OSError inside ``exc`` (trio nests it in exception groups), if that is all it is."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, OSError) else None


def _explain_listen_error(error: OSError, host: str, port: int) -> str:
    """One line: what went wrong when listening, and what to do about it."""
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    if error.errno == errno.EADDRINUSE:
        return (f"port {port} is already in use on {host} (another demo still running?); "
                f"pick another one with --port, e.g. python -m volleyio --port {port + 1}")
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"not allowed to listen on {where} (ports below 1024 need privileges); pick another with --port"
    if error.errno == errno.EADDRNOTAVAIL or isinstance(error, socket.gaierror):
        return f"cannot listen on {where}: {error.strerror or error}; check --host (e.g. 127.0.0.1 or 0.0.0.0)"
    return f"cannot listen on {where}: {error.strerror or error}"


if __name__ == "__main__":
    sys.exit(main())
