"""``python -m volleyio``: the demo server (default) and an interactive client."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

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
        description="ws:// and wss:// URLs: plain WebSocket (lines are sent as text messages). "
        "http:// and https:// URLs, or --socketio: Socket.IO (lines are emitted as the demo's "
        '"chat" event; /help lists the commands).',
    )
    client.add_argument("url", help="ws://, wss://, http:// or https:// URL")
    client.add_argument("--socketio", action="store_true", help="use Socket.IO even for a ws:// or wss:// URL")
    client.add_argument("--transport", choices=("polling", "websocket"),
                        help="Socket.IO: use only this transport (default: long-polling, then upgrade to WebSocket)")
    client.add_argument("--namespace", type=_namespace, default="/", help="Socket.IO namespace (default: /)")
    client.add_argument("--path", default="/socket.io/", help="Socket.IO endpoint path (default: /socket.io/)")
    client.add_argument("--name", default="cli", help="Socket.IO: name used for chat lines (default: cli)")
    client.add_argument("--auth", type=_json_object, default=None,
                        help='Socket.IO: auth payload, a JSON object (the demo sends counters to {"stats": true})')

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
            lines.append(f"  compiled module expected but not loaded: {_speedups.build_status()}"
                         + (f"; {_speedups.LOAD_ERROR}" if _speedups.LOAD_ERROR else ""))
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
        if not socketio and (args.transport or args.auth is not None or args.namespace != "/"):
            parser.error("--transport, --namespace and --auth are Socket.IO options: "
                         "use an http(s):// URL or --socketio")
        try:
            if socketio:
                return trio.run(
                    lambda: run_socketio_client(
                        socketio_base_url(args.url), name=args.name, transport=args.transport,
                        namespace=args.namespace, path=args.path, auth=args.auth,
                    )
                )
            return trio.run(run_client, args.url)
        except KeyboardInterrupt:
            return 130
    from .demo.server import run_demo

    try:
        trio.run(run_demo, args.host, args.port)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
