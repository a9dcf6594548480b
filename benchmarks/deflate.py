"""permessage-deflate: compress-once broadcast vs per-connection compression, and memory
per connection.

    PYTHONPATH=src python benchmarks/deflate.py [--receivers 1000] [--repeat 5]

1. CPU time (``time.process_time``, best of ``--repeat``) to produce the wire bytes of
   one 4 KiB JSON text message for N receivers: a ``PreparedMessage`` (compressed and
   framed once, shared by connections without server context takeover) vs every
   connection compressing it itself (``send_text``), with and without context takeover,
   for window bits 12 / memLevel 5 (LIMITS.md default) and 15 / 8 (zlib's default).
2. Memory per connection: N server-side ``WebSocketConnection`` objects that have each
   received one compressed message and sent one, measured with tracemalloc (zlib's
   state is allocated through PyMem_RawMalloc, so it is traced) and as the RSS delta
   (a separate pass without tracemalloc).

Bounded: well under a minute on a slow core.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable

from volleyio import _speedups
from volleyio.websocket.connection import Role, WebSocketConnection
from volleyio.websocket.deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    PreparedMessage,
    ServerPerMessageDeflateFactory,
)
from volleyio.websocket.extensions import parse_extensions_header

# What browsers offer (Chrome, Firefox): client_max_window_bits without a value.
BROWSER_OFFER = "permessage-deflate; client_max_window_bits"


def json_message(size: int = 4096, seed: int = 1) -> str:
    rnd = random.Random(seed)
    events: list[dict[str, object]] = []
    while len(json.dumps(events)) < size:
        events.append(
            {
                "type": rnd.choice(["chat", "presence", "typing"]),
                "room": f"room-{rnd.randrange(50)}",
                "user": {"id": rnd.randrange(10**6), "name": f"user{rnd.randrange(1000)}"},
                "text": rnd.choice(["hello", "how are you?", "see you tomorrow", "ok", "lol"]),
                "ts": 1_700_000_000_000 + rnd.randrange(10**7),
            }
        )
    return json.dumps(events)[:size]


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def server_connections(factory: ServerPerMessageDeflateFactory | None, count: int, offer: str = BROWSER_OFFER) -> list[WebSocketConnection]:
    connections = []
    offers = [params for _, params in parse_extensions_header([offer])]
    for _ in range(count):
        extensions: list[PerMessageDeflate] = []
        if factory is not None:
            negotiated = factory.negotiate(offers)
            assert negotiated is not None
            extensions.append(negotiated[1])
        connections.append(WebSocketConnection(Role.SERVER, extensions=extensions))
    return connections


def best_cpu(run: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def broadcast_table(receivers: int, repeat: int) -> list[tuple[str, float, int]]:
    # A different message each run (same shape, other values): sending one text again
    # and again would let a 32 KiB window find the previous copy and make context
    # takeover look far better than for a real stream of distinct events.
    texts = [json_message(seed=seed) for seed in range(repeat + 1)]
    current = {"text": texts[0]}
    rows: list[tuple[str, float, int]] = []

    def add(label: str, make_run: Callable[[], Callable[[], int]]) -> None:
        # The connections live only for this row (1,000 connections at 15/8 with
        # context takeover hold ~300 MB).
        run = make_run()
        sizes: list[int] = []
        run_index = iter(range(1, repeat + 1))

        def one() -> None:
            current["text"] = texts[next(run_index)]
            sizes.append(run())

        current["text"] = texts[0]
        run()  # warm-up with texts[0]: context takeover windows hold a previous message
        seconds = best_cpu(one, repeat)
        rows.append((label, seconds, sizes[-1]))

    def prepared_runner(factory: ServerPerMessageDeflateFactory | None) -> Callable[[], Callable[[], int]]:
        def make_run() -> Callable[[], int]:
            connections = server_connections(factory, receivers)

            def run() -> int:
                prepared = PreparedMessage(current["text"])
                for connection in connections:
                    connection.send_raw_frames(prepared.frames_for(connection))
                return sum(len(connection.data_to_send()) for connection in connections)

            return run

        return make_run

    def send_text_runner(factory: ServerPerMessageDeflateFactory | None) -> Callable[[], Callable[[], int]]:
        def make_run() -> Callable[[], int]:
            connections = server_connections(factory, receivers)

            def run() -> int:
                for connection in connections:
                    connection.send_text(current["text"])
                return sum(len(connection.data_to_send()) for connection in connections)

            return run

        return make_run

    add("no compression, framed once (PreparedMessage)", prepared_runner(None))
    add("no compression, send_text per connection", send_text_runner(None))
    for bits, mem_level in ((12, 5), (15, 8)):
        for takeover in (False, True):
            factory = ServerPerMessageDeflateFactory(
                server_max_window_bits=bits,
                client_max_window_bits=bits,
                mem_level=mem_level,
                server_no_context_takeover=not takeover,
            )
            mode = "context takeover" if takeover else "no context takeover"
            if not takeover:
                add(f"deflate {bits}/{mem_level}, {mode}: compress once (PreparedMessage)", prepared_runner(factory))
            else:
                add(f"deflate {bits}/{mem_level}, {mode}: PreparedMessage (falls back per connection)", prepared_runner(factory))
            add(f"deflate {bits}/{mem_level}, {mode}: send_text per connection", send_text_runner(factory))
    return rows


def client_frame(text: str, offer_response: str, bits: int) -> bytes:
    """A masked, compressed client frame: the first message of a fresh stream, so the
    same bytes are valid for every server connection."""
    client = ClientPerMessageDeflateFactory(client_max_window_bits=bits).accept(parse_extensions_header([offer_response])[0][1])
    payload, rsv = client.encode_message(text.encode(), 1, True)
    return _speedups.encode_frame(1, payload, True, rsv, b"\x12\x34\x56\x78")


def memory_configs() -> list[tuple[str, ServerPerMessageDeflateFactory | None, str]]:
    return [
        ("no compression", None, BROWSER_OFFER),
        ("deflate 12/5, context takeover (client offers client_max_window_bits)", ServerPerMessageDeflateFactory(), BROWSER_OFFER),
        ("deflate 12/5, context takeover (client window 15: offer without it)", ServerPerMessageDeflateFactory(), "permessage-deflate"),
        (
            "deflate 15/8, context takeover",
            ServerPerMessageDeflateFactory(server_max_window_bits=15, client_max_window_bits=15, mem_level=8),
            BROWSER_OFFER,
        ),
        (
            "deflate 12/5, no context takeover either way",
            ServerPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True),
            BROWSER_OFFER,
        ),
    ]


def build_connections(config_index: int, receivers: int) -> list[WebSocketConnection]:
    """``receivers`` server connections that each received and sent one 4 KiB message."""
    text = json_message()
    _, factory, offer = memory_configs()[config_index]
    if factory is not None:
        negotiated = factory.negotiate([params for _, params in parse_extensions_header([offer])])
        assert negotiated is not None
        response, extension = negotiated
        frame = client_frame(text, response, extension.remote_max_window_bits)
    else:
        frame = _speedups.encode_frame(1, text.encode(), True, 0, b"\x12\x34\x56\x78")
    connections = server_connections(factory, receivers, offer)
    for connection in connections:
        connection.receive_data(frame)
        (event,) = connection.events()
        assert event.data == text  # type: ignore[union-attr]
        connection.send_text(text)
        connection.data_to_send()
    return connections


def measure_rss(config_index: int, receivers: int) -> float:
    """RSS growth per connection; run in a fresh process (see memory_table)."""
    build_connections(config_index, 1)  # imports, caches, first-use allocations
    gc.collect()
    before = rss_bytes()
    kept = build_connections(config_index, receivers)
    growth = (rss_bytes() - before) / receivers
    del kept
    return growth


def memory_table(receivers: int) -> list[tuple[str, float, float]]:
    rows: list[tuple[str, float, float]] = []
    for index, (label, _, _) in enumerate(memory_configs()):
        build_connections(index, 1)
        gc.collect()
        tracemalloc.start()
        before, _ = tracemalloc.get_traced_memory()
        kept = build_connections(index, receivers)
        after, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del kept
        gc.collect()
        # RSS in a fresh interpreter: in this one, pages freed by the previous
        # configuration would be reused and hide the growth.
        result = subprocess.run(
            [sys.executable, __file__, "--rss-config", str(index), "--receivers", str(receivers)],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append((label, (after - before) / receivers, float(result.stdout)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receivers", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rss-config", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_config is not None:
        print(measure_rss(args.rss_config, args.receivers))
        return

    print(f"zlib {zlib.ZLIB_RUNTIME_VERSION} (compiled against {zlib.ZLIB_VERSION}); speedups: {_speedups.IMPLEMENTATION}")
    print(f"\n1) one 4 KiB JSON text message to {args.receivers} receivers, CPU time (best of {args.repeat})\n")
    rows = broadcast_table(args.receivers, args.repeat)
    width = max(len(label) for label, _, _ in rows)
    print(f"{'case':<{width}}  {'CPU ms':>8}  {'us/recv':>8}  {'wire bytes/recv':>15}")
    for label, seconds, total in rows:
        print(f"{label:<{width}}  {seconds * 1e3:8.2f}  {seconds * 1e6 / args.receivers:8.2f}  {total / args.receivers:15.0f}")

    print(f"\n2) memory per connection, {args.receivers} server connections that each received and sent one 4 KiB message\n")
    memory_rows = memory_table(args.receivers)
    width = max(len(label) for label, _, _ in memory_rows)
    print(f"{'configuration':<{width}}  {'tracemalloc KiB':>15}  {'RSS KiB':>8}")
    for label, traced, rss in memory_rows:
        print(f"{label:<{width}}  {traced / 1024:15.1f}  {rss / 1024:8.1f}")


if __name__ == "__main__":
    main()
