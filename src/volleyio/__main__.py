"""``python -m volleyio``: the demo server (default) and an interactive client."""

from __future__ import annotations

import argparse
import sys

import trio


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m volleyio", description=__doc__)
    commands = parser.add_subparsers(dest="command")

    demo = commands.add_parser("demo", help="run the demo server (the default command)")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")

    client = commands.add_parser("client", help="interactive WebSocket client: lines in, messages out")
    client.add_argument("url", help="ws:// or wss:// URL")

    commands.add_parser("info", help="print the version and which speedups implementation loaded")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "demo"
    if command == "info":
        from . import __version__, _speedups

        print(f"volleyio {__version__}, speedups: {_speedups.IMPLEMENTATION}")
        return 0
    if command == "client":
        from .demo.client import run_client

        return trio.run(run_client, args.url)
    from .demo.server import run_demo

    host = getattr(args, "host", "127.0.0.1")
    port = getattr(args, "port", 8000)
    try:
        trio.run(run_demo, host, port)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
