"""Where the Socket.IO event path spends its CPU: a deterministic profile per ack.

    PYTHONPATH=src python benchmarks/socketio/profile_acks.py [--acks 50000] [--clients 100]
                                                         [--inflight 1] [--server volleyio|floor]
                                                         [--top 25] [--pstats out.prof]

Runs the server of ``servers.py`` (``volleyio``: SocketIOServer with the benchmark's
handlers; ``floor``: the JSON-over-callback-WebSocket floor) in this process under
``cProfile`` with a CPU-time clock (``time.process_time``: time blocked in epoll costs
nothing), and drives it with the C load generator (``../engineio/eioload.c``, the ack
scenario of run.py: CLIENTS clients x INFLIGHT acks in flight). The profiler is on only
during the measured phase (after every client connected, after a warm-up run). Prints the
CPU per ack split by where it is spent (the categories below, by the file or built-in
each function's own time belongs to) and the top functions by own time.

cProfile's per-call overhead inflates code that makes many small Python calls, so the
split is what to read, not the absolute microseconds (run.py measures those unprofiled).
Not pinned to a core (it is one process); run it under ``nice`` on a loaded machine.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "engineio"))
import benchlib  # noqa: E402

# (category, test on "file:function" of the pstats key); first match wins.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("json (encode/decode)", ("/json/", "_json.", "json.")),
    ("socket syscalls (send/recv)", ("'send' of '_socket", "'recv' of '_socket", "'recv_into' of '_socket",
                                     "method send' of", "method recv' of")),
    ("Socket.IO decode/route/encode (sans-I/O)", ("volleyio/socketio/",)),
    ("Socket.IO trio layer (handler call, ack, emit)", ("volleyio/trio/_socketio", "volleyio/trio/_acks",
                                                          "volleyio/trio/_broadcast")),
    ("Engine.IO session (sans-I/O)", ("volleyio/engineio/",)),
    ("Engine.IO trio layer (session, transport pump)", ("volleyio/trio/_engineio",)),
    ("WebSocket (sans-I/O frames, trio connection)", ("volleyio/websocket/", "volleyio/_speedups",
                                                       "volleyio/trio/_connection", "volleyio/trio/_server",
                                                       "volleyio/trio/_http", "volleyio/trio/_waiting",
                                                       "volleyio/trio/_keepalive", "_compiled.")),
    ("trio scheduler, task hops, waits", ("site-packages/trio/", "/trio/_core", "outcome/", "contextvars",
                                          "'run' of 'Context", "epoll", "_contextvars", "methods trio.",
                                          "methods outcome.", "'send' of 'coroutine'")),
    ("benchmark handlers", ("benchmarks/socketio/profile_acks.py",)),
]


OTHER = "other (unattributed builtins and stdlib)"


def category(key: tuple[str, int, str]) -> str:
    text = f"{key[0]}:{key[2]}"
    for name, needles in CATEGORIES:
        if any(n in text for n in needles):
            return name
    return OTHER


def split_by_category(raw: dict[Any, Any]) -> dict[str, float]:
    """Own time per category. A builtin or stdlib helper (``len``, ``dict.get``,
    ``deque.append``...) has no category of its own: its time goes to its callers'
    categories, in proportion to the time each caller spent in it (one level up)."""
    by_cat: dict[str, float] = {}
    for key, (_cc, _nc, tottime, _ct, callers) in raw.items():
        cat = category(key)
        if cat != OTHER or not callers:
            by_cat[cat] = by_cat.get(cat, 0.0) + tottime
            continue
        shares = {c: v[2] for c, v in callers.items()}
        whole = sum(shares.values()) or 1.0
        for caller, t in shares.items():
            ccat = category(caller)
            by_cat[ccat] = by_cat.get(ccat, 0.0) + tottime * t / whole
    return by_cat


def json_share(size: int = 32) -> tuple[float, float]:
    """µs per ack of the JSON work alone, unprofiled: the C scanner on the event's
    arguments and the C encoder on the ack's (what packets.py's _loads/_encode call; a
    profiler cannot see calls into those objects, so their time shows as the callers')."""
    import json
    import timeit

    text = json.dumps(["echo", "a" * size], separators=(",", ":"))
    scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
    encode = json.JSONEncoder(separators=(",", ":")).encode
    args = ["a" * size]
    n = 200_000
    t_dec = min(timeit.repeat(lambda: scan(text, 0), number=n, repeat=3)) / n
    t_enc = min(timeit.repeat(lambda: encode(args), number=n, repeat=3)) / n
    return t_dec * 1e6, t_enc * 1e6


def build_server(kind: str) -> Any:
    """An ``async def run(port, task_status)`` serving the chosen server."""
    import json

    import volleyio.trio as vt

    if kind == "volleyio":
        sio = vt.SocketIOServer()

        @sio.on("connect")
        async def connect(socket: vt.Socket, auth: Any) -> None:
            await socket.join("bench")

        @sio.on("echo")
        async def echo(socket: vt.Socket, *args: Any) -> Any:
            return args

        async def run(port: int, task_status: Any) -> None:
            await sio.serve("127.0.0.1", port, backlog=8192, task_status=task_status)

        return run
    loads, dumps = json.loads, json.dumps
    opened = '0{"sid":"floor","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'

    class Floor(vt.MessageHandler):  # the same as servers.py's run_floor
        def on_open(self, ws: vt.WebSocketConnection) -> None:
            ws.send_nowait(opened)

        def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
            if not isinstance(message, str):
                return
            if message.startswith("42"):
                end = 2
                while message[end].isdigit():
                    end += 1
                args = loads(message[end:])
                if end > 2:
                    ws.send_nowait("43" + message[2:end] + dumps(args[1:], separators=(",", ":")))
            elif message == "40":
                ws.send_nowait('40{"sid":"floor-socket"}')

    async def run_floor(port: int, task_status: Any) -> None:
        await vt.serve({"/socket.io/": Floor()}, "127.0.0.1", port, backlog=8192, task_status=task_status)

    return run_floor


async def read_line(stream: Any, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise RuntimeError("load generator ended early")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


async def drive(args: argparse.Namespace, loadgen: Path, prof: cProfile.Profile) -> dict[str, Any]:
    import json
    import os

    serve = build_server(args.server)
    base = [str(loadgen), "sio-ack", str(args.port), "/socket.io/", str(args.clients)]
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, args.port)
        warm = await trio.run_process([*base, "2", "32", str(max(args.acks // 10, 1000)), "60"],
                                      capture_stdout=True, capture_stderr=True, check=False)
        if warm.returncode:
            raise RuntimeError(f"warm-up failed: {warm.stderr.decode()[-300:]}")
        proc = await trio.lowlevel.open_process(
            [*base, str(args.inflight), "32", str(args.acks), "120"], stdin=-1, stdout=-1,
            env=dict(os.environ, EIOLOAD_SYNC="1"))
        buf = bytearray()
        await read_line(proc.stdout, buf)  # {"connected": n}
        await trio.sleep(0.2)
        cpu0 = time.process_time()
        prof.enable()
        await proc.stdin.send_all(b"\n")
        line = await read_line(proc.stdout, buf)
        prof.disable()
        cpu = time.process_time() - cpu0
        await proc.stdin.send_all(b"\n")
        code = await proc.wait()
        if code:
            raise RuntimeError(f"load generator exit status {code} (a wrong answer is status 3)")
        nursery.cancel_scope.cancel()
    result: dict[str, Any] = json.loads(line)
    result["profiled_cpu"] = cpu
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--acks", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--server", choices=["volleyio", "floor"], default="volleyio")
    parser.add_argument("--port", type=int, default=19390)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--pstats", type=Path, help="also write the raw profile here")
    args = parser.parse_args()
    prof = cProfile.Profile(time.process_time)
    with tempfile.TemporaryDirectory() as tmp:
        loadgen = benchlib.build_loadgen(Path(tmp))
        result = trio.run(drive, args, loadgen, prof)
    if args.pstats:
        prof.dump_stats(str(args.pstats))
    stats = pstats.Stats(prof)
    acks = result["messages"]
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    by_cat = split_by_category(raw)
    total = sum(by_cat.values())
    print(f"{args.server}: {acks:,} acks, {args.clients} clients x {args.inflight} in flight; "
          f"CPU under the profiler {result['profiled_cpu']:.2f} s = {result['profiled_cpu'] / acks * 1e6:.1f} µs/ack "
          f"(profiled functions' own time {total:.2f} s)")
    print()
    print("| where | µs per ack (profiled) | share |")
    print("|---|---:|---:|")
    for name, t in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {t / acks * 1e6:.1f} | {t / total:.0%} |")
    dec, enc = json_share()
    print()
    print(f"JSON inside that (timed apart, unprofiled): decode {dec:.2f} µs + encode {enc:.2f} µs per ack; "
          "a profiler charges it to Socket.IO decode/encode (packets.py _loads/_encode).")
    print()
    print(f"Top {args.top} functions by own time (calls per ack, µs per ack):")
    print()
    print("| function | category | calls/ack | own µs/ack |")
    print("|---|---|---:|---:|")
    top = sorted(raw.items(), key=lambda kv: -kv[1][2])[: args.top]
    for key, (_cc, nc, tottime, _ct, _callers) in top:
        where = f"{Path(key[0]).name}:{key[1]} {key[2]}" if key[0] != "~" else key[2]
        print(f"| `{where}` | {category(key)} | {nc / acks:.2f} | {tottime / acks * 1e6:.2f} |")


if __name__ == "__main__":
    main()
