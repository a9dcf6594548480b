"""Socket.IO benchmark: volleyio.trio.SocketIOServer against python-socketio and Node socket.io.

    python benchmarks/socketio/run.py [--quick] [--servers a,b] [--scenarios ack,bcast]
                                      [--clients 100] [--inflight 1,10] [--bcast-clients 1000] [--json out.json]
                                      [--rounds 3]

Every server runs --rounds times (default 3), the servers' order rotated each round; the
tables show the median of the rounds and (min..max). Servers: volleyio; python-socketio with
its default ``async_handlers=True`` and ``-sync`` (``async_handlers=False``, its recommended
fast configuration); Node socket.io with ws's native add-ons (bufferutil, utf-8-validate:
installed in tests/js, loaded automatically; node_server.js fails if they cannot load) and
``-purejs`` (WS_NO_BUFFER_UTIL=1, WS_NO_UTF_8_VALIDATE=1); and ``floor``, our floor (not a
Socket.IO server, ack scenario only). Ratios: volleyio over the best Node row, the best
Python row and the floor. The load generator checks every answer (ack ids and payloads):
a wrong answer voids the run (exit status 1, "RUN VOID" on stderr).

Same handlers in every server (``servers.py``, ``node_server.js``): clients join room "bench"
on connect, "echo" acks its arguments, "bcast" emits "tick" to the room. Each server runs in a
fresh process pinned to core 0; the load generator is C (``../engineio/eioload.c``, compiled
here with gcc -O2) pinned to core 1, speaking Socket.IO over raw WebSocket ("40" connect,
"42"/"43" events and acks, "2" answered with "3"). It reports its own CPU time: "gen util"
1.0 means its core was busy for the whole run (it saturated; the server may be faster than
measured).

Scenarios:
  ack    100 clients, each keeps N events with an ack in flight (`42<id>["echo","<32 B>"]`,
         answered `43<id>["<32 B>"]`), for every N in --inflight: acks/s and server CPU
         seconds per 100k acks.
  bcast  1,000 clients in one room; client 0 emits "bcast", the server emits "tick" to the
         room; the next broadcast starts once all 1,000 deliveries arrived. Time from the
         trigger to the last delivery (mean, p50, p99) and server CPU ms per broadcast.
Server "volleyio-recovery" is volleyio with ``connection_state_recovery=True`` (opt-in,
``--servers volleyio,volleyio-recovery``): the cost of the recovery bookkeeping.
Server CPU is user+system time of the server process (all threads) from /proc/PID/stat,
read after every client connected and before any disconnect (a warm-up run precedes it).
Measures and prints only; nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "engineio"))
import benchlib  # noqa: E402

SERVERS = ["volleyio", "python-socketio", "python-socketio-sync", "node-socket.io", "node-socket.io-purejs", "floor"]
# What each server row is (the table prints it); "-sync"/"-purejs" rows are the peers' other
# configurations, "floor" is ours: not a Socket.IO server.
CONFIGS = {
    "volleyio": "SocketIOServer, async def handlers",
    "python-socketio": "aiohttp, async_handlers=True (default)",
    "python-socketio-sync": "aiohttp, async_handlers=False (recommended fast)",
    # ws 8 on Node >= 18.14 validates UTF-8 with buffer.isUtf8 and never loads utf-8-validate;
    # bufferutil masks frames of 48 B and up (the 32 B messages here stay in JS either way).
    "node-socket.io": "ws with bufferutil + utf-8-validate installed (bufferutil loaded; ws uses Node's isUtf8)",
    "node-socket.io-purejs": "ws without native add-ons (WS_NO_BUFFER_UTIL=1, WS_NO_UTF_8_VALIDATE=1)",
    "floor": "FLOOR: callback WebSocket + json, no Engine.IO/Socket.IO work",
    "volleyio-asgi": "volleyio.asgi.ASGIApp(sio, starlette_app) under hypercorn's trio worker",
    "floor-asgi": "FLOOR: bare ASGI app under hypercorn-trio answering 42 with 43, no Socket.IO",
    "python-socketio-asgi": "socketio.ASGIApp(sio, starlette_app) under uvicorn (defaults)",
}
PYTHON_PEERS = ["python-socketio", "python-socketio-sync"]
NODE_PEERS = ["node-socket.io", "node-socket.io-purejs"]
FLOORS = ["floor"]
#: ``--asgi``: the ASGI mount (volleyio.asgi under hypercorn's trio worker) beside volleyio's
#: own server, python-socketio's ASGIApp under uvicorn, hypercorn's bare floor and python-socketio.
ASGI_SERVERS = ["volleyio", "volleyio-asgi", "floor-asgi", "python-socketio-asgi", "python-socketio"]
PACKAGES = ["trio", "h11", "aiohttp", "python-engineio", "python-socketio", "hypercorn", "wsproto", "uvicorn",
            "websockets", "starlette"]
NODE_PACKAGES = ["socket.io", "engine.io", "ws"]
PATH = "/socket.io/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10x fewer messages and broadcasts (smoke run)")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--asgi", action="store_true", help="servers = " + ",".join(ASGI_SERVERS))
    parser.add_argument("--scenarios", default="ack,bcast")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--inflight", default="1,10", help="events in flight per client, one ack run each")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--bcast-clients", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--port", type=int, default=19100)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over all servers, order rotated each round; tables show medians (min..max)")
    args = parser.parse_args()
    servers = ASGI_SERVERS if args.asgi else [s for s in args.servers.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    inflights = [int(x) for x in args.inflight.split(",") if x]
    scale = 0.1 if args.quick else 1.0
    cap = 10.0 if args.quick else 40.0
    ack_total = int(200_000 * scale)
    bcast_total = int(300 * scale)
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in servers}
    check_failures: list[str] = []
    load_before = benchlib.loadavg()
    started = time.time()
    port = args.port
    with tempfile.TemporaryDirectory() as tmp:
        loadgen = benchlib.build_loadgen(Path(tmp))
        for round_no, name in ((r, n) for r in range(args.rounds) for n in benchlib.rotated(servers, r)):
            res: dict[str, Any] = {}
            runs: list[tuple[str, int]] = []
            if "ack" in scenarios:
                runs += [(f"ack-{n}", n) for n in inflights]
            if "bcast" in scenarios and not name.startswith("floor"):  # the floors do not broadcast
                runs.append(("bcast", 0))
            for key, inflight in runs:
                port += 1
                try:
                    server = benchlib.Server(HERE / "servers.py", name, port)
                except Exception as exc:  # noqa: BLE001 - report the failure in the table, go on
                    res[key] = {"error": str(exc)}
                    continue
                try:
                    if key == "bcast":
                        r = benchlib.measure_load(loadgen, server, "sio-bcast", port, PATH, args.bcast_clients, 0,
                                                  args.size, bcast_total, cap, warmup=max(bcast_total // 10, 10))
                        r["cpu_ms_per_bcast"] = round(r["server_cpu"] * 1000 / max(r["broadcasts"], 1), 3)
                    else:
                        r = benchlib.measure_load(loadgen, server, "sio-ack", port, PATH, args.clients, inflight,
                                                  args.size, ack_total, min(cap, 30.0),
                                                  warmup=max(ack_total // 20, 1000))
                        r["cpu_per_100k"] = round(r["server_cpu"] * 100_000 / max(r["messages"], 1), 3)
                    r["server_alive"] = server.alive()
                    res[key] = r
                except benchlib.CheckFailed as exc:
                    res[key] = {"error": f"wrong answer: {exc}"}
                    check_failures.append(f"{name} {key}: {exc}")
                except Exception as exc:  # noqa: BLE001
                    res[key] = {"error": str(exc)}
                finally:
                    server.stop()
                print(f"round {round_no + 1} {name} {key}: {json.dumps(res[key])}", file=sys.stderr, flush=True)
                rounds[name].setdefault(key, []).append(res[key])
    results = {name: {key: benchlib.summarize(runs) for key, runs in by_key.items()}
               for name, by_key in rounds.items()}
    info = benchlib.versions(PACKAGES, NODE_PACKAGES)
    meta = {"load_before": load_before, "load_after": benchlib.loadavg(), "seconds": round(time.time() - started, 1),
            "quick": args.quick, "clients": args.clients, "inflight": inflights, "size": args.size,
            "bcast_clients": args.bcast_clients, "broadcasts": bcast_total, "rounds": args.rounds,
            "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started))}
    print(json.dumps({"meta": meta, "versions": info, "results": results}))
    print()
    print(render(results, info, meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "versions": info, "results": results}, indent=2))
    if check_failures:
        sys.exit("RUN VOID, the load generator got wrong answers:\n" + "\n".join(check_failures))


def render(results: dict[str, dict[str, Any]], info: dict[str, str], meta: dict[str, Any]) -> str:
    def get(res: dict[str, Any], key: str, field: str, fmt: str) -> str:
        return benchlib.spread(res.get(key), field, fmt)

    def gen(res: dict[str, Any], keys: list[str]) -> str:
        utils = [res[k]["gen_util"] for k in keys if k in res and "gen_util" in res[k]]
        return f"{max(utils):.2f}" if utils else "–"

    c = meta["clients"]
    ack_keys = [f"ack-{n}" for n in meta["inflight"]]
    lines = ["Ack round trips:", ""]
    header = "| server |"
    sep = "|---|"
    for n in meta["inflight"]:
        header += f" acks/s ({c} clients × {n}) | server CPU s/100k acks ({c}×{n}) |"
        sep += "---:|---:|"
    lines += [header + " loadgen util (max) |", sep + "---:|"]
    for name, res in results.items():
        row = f"| {name} |"
        for key in ack_keys:
            row += f" {get(res, key, 'msgs_per_s', ',.0f')} | {get(res, key, 'cpu_per_100k', '.2f')} |"
        lines.append(row + f" {gen(res, ack_keys)} |")
    b = meta["bcast_clients"]
    lines += ["", f"Room broadcast to {b:,} clients ({meta['broadcasts']} broadcasts, one at a time):", "",
              "| server | emit → last delivery mean ms | p50 ms | p99 ms | server CPU ms / broadcast "
              "| deliveries/s | loadgen util |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, res in results.items():
        lines.append(
            f"| {name} | {get(res, 'bcast', 'mean_ms', '.2f')} | {get(res, 'bcast', 'p50_ms', '.2f')} "
            f"| {get(res, 'bcast', 'p99_ms', '.2f')} | {get(res, 'bcast', 'cpu_ms_per_bcast', '.2f')} "
            f"| {get(res, 'bcast', 'deliveries_per_s', ',.0f')} | {gen(res, ['bcast'])} |"
        )
    lines += ["", f"Medians of {meta['rounds']} round(s), (min..max) over the rounds; server order rotated each round.",
              "", "| server | configuration |", "|---|---|"]
    lines += [f"| {name} | {CONFIGS.get(name, '')} |" for name in results]
    lines += ["", "volleyio / peer, medians (speed > 1 is faster; CPU and time < 1 is less):", ""]
    metrics = []
    for key in ack_keys:
        metrics += [(key, "msgs_per_s", f"{key} acks/s", True), (key, "cpu_per_100k", f"{key} CPU per ack", False)]
    metrics += [("bcast", "mean_ms", "broadcast emit→last delivery", False),
                ("bcast", "cpu_ms_per_bcast", "broadcast CPU", False)]
    lines += benchlib.ratio_lines(results, "volleyio", {"best Node": NODE_PEERS, "best Python peer": PYTHON_PEERS,
                                                        "floor": FLOORS}, metrics)
    lines.append("")
    v = results.get("volleyio", {})
    for peer in ("python-socketio", "node-socket.io"):
        p = results.get(peer, {})
        parts = []
        for key in ack_keys:
            try:
                parts.append(f"{key}: acks/s {v[key]['msgs_per_s'] / p[key]['msgs_per_s']:.2f}×, server CPU per ack "
                             f"{v[key]['cpu_per_100k'] / p[key]['cpu_per_100k']:.2f}×")
            except (KeyError, ZeroDivisionError, TypeError):
                pass
        try:
            parts.append(f"broadcast: mean emit→last delivery {v['bcast']['mean_ms'] / p['bcast']['mean_ms']:.2f}×, "
                         f"server CPU per broadcast {v['bcast']['cpu_ms_per_bcast'] / p['bcast']['cpu_ms_per_bcast']:.2f}×")
        except (KeyError, ZeroDivisionError, TypeError):
            pass
        if parts:
            lines.append(f"volleyio / {peer} (speed > 1 is faster, CPU and time < 1 is less): " + "; ".join(parts) + ".")
    a = results.get("volleyio-asgi", {})
    for peer in ("volleyio", "python-socketio-asgi", "floor-asgi", "python-socketio"):
        p = results.get(peer, {})
        parts = []
        for key in [*ack_keys, "bcast"]:
            field, unit = ("msgs_per_s", "acks/s") if key != "bcast" else ("deliveries_per_s", "deliveries/s")
            cpu = "cpu_per_100k" if key != "bcast" else "cpu_ms_per_bcast"
            try:
                parts.append(f"{key}: {unit} {a[key][field] / p[key][field]:.2f}×, server CPU "
                             f"{a[key][cpu] / p[key][cpu]:.2f}×")
            except (KeyError, ZeroDivisionError, TypeError):
                pass
        if a and parts:
            lines.append(f"volleyio-asgi / {peer}: " + "; ".join(parts) + ".")
    utils = [r["gen_util"] for res in results.values() for r in res.values()
             if isinstance(r, dict) and "gen_util" in r]
    if utils:
        lines.append(f"Load generator: max CPU use {max(utils):.2f} of its core "
                     f"({'SATURATED: numbers are a lower bound' if max(utils) >= 0.9 else 'not saturated'}).")
    lines.append("")
    lines.append("Versions: " + ", ".join(f"{key} {val}" for key, val in info.items()))
    lines.append(benchlib.machine_line())
    lines.append(f"Run: {meta['started_utc']} UTC, {meta['seconds']} s; load average before "
                 f"{meta['load_before']}, after {meta['load_after']} (1/5/15 min).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
