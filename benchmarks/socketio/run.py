"""Socket.IO benchmark: volleyio.trio.SocketIOServer against python-socketio and Node socket.io.

    python benchmarks/socketio/run.py [--quick] [--servers a,b] [--scenarios ack,bcast]
                                      [--clients 100] [--inflight 1,10] [--bcast-clients 1000] [--json out.json]

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

SERVERS = ["volleyio", "python-socketio", "node-socket.io"]
PACKAGES = ["trio", "h11", "aiohttp", "python-engineio", "python-socketio"]
NODE_PACKAGES = ["socket.io", "engine.io", "ws"]
PATH = "/socket.io/"
TARGET_RATIO = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10x fewer messages and broadcasts (smoke run)")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--scenarios", default="ack,bcast")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--inflight", default="1,10", help="events in flight per client, one ack run each")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--bcast-clients", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--port", type=int, default=19100)
    args = parser.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    inflights = [int(x) for x in args.inflight.split(",") if x]
    scale = 0.1 if args.quick else 1.0
    cap = 10.0 if args.quick else 40.0
    ack_total = int(200_000 * scale)
    bcast_total = int(300 * scale)
    results: dict[str, dict[str, Any]] = {}
    load_before = benchlib.loadavg()
    started = time.time()
    port = args.port
    with tempfile.TemporaryDirectory() as tmp:
        loadgen = benchlib.build_loadgen(Path(tmp))
        for name in servers:
            res: dict[str, Any] = {}
            results[name] = res
            runs: list[tuple[str, int]] = []
            if "ack" in scenarios:
                runs += [(f"ack-{n}", n) for n in inflights]
            if "bcast" in scenarios:
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
                except Exception as exc:  # noqa: BLE001
                    res[key] = {"error": str(exc)}
                finally:
                    server.stop()
                print(f"{name} {key}: {json.dumps(res[key])}", file=sys.stderr, flush=True)
    info = benchlib.versions(PACKAGES, NODE_PACKAGES)
    meta = {"load_before": load_before, "load_after": benchlib.loadavg(), "seconds": round(time.time() - started, 1),
            "quick": args.quick, "clients": args.clients, "inflight": inflights, "size": args.size,
            "bcast_clients": args.bcast_clients, "broadcasts": bcast_total,
            "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started))}
    print(json.dumps({"meta": meta, "versions": info, "results": results}))
    print()
    print(render(results, info, meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "versions": info, "results": results}, indent=2))


def render(results: dict[str, dict[str, Any]], info: dict[str, str], meta: dict[str, Any]) -> str:
    def get(res: dict[str, Any], key: str, field: str, fmt: str) -> str:
        r = res.get(key)
        if r is None:
            return "–"
        if "error" in r:
            return "error"
        value = format(r[field], fmt)
        if r.get("complete") is False:
            value += " (capped)"
        return value

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
    p = results.get("python-socketio", {})
    checks = []
    for key in ack_keys:
        try:
            checks.append((f"{key} acks/s", v[key]["msgs_per_s"] / p[key]["msgs_per_s"]))
        except (KeyError, ZeroDivisionError, TypeError):
            pass
    try:
        checks.append(("less server CPU per broadcast", p["bcast"]["cpu_ms_per_bcast"] / v["bcast"]["cpu_ms_per_bcast"]))
        checks.append(("lower emit→last delivery", p["bcast"]["mean_ms"] / v["bcast"]["mean_ms"]))
    except (KeyError, ZeroDivisionError, TypeError):
        pass
    for label, r in checks:
        lines.append(f"Target ≥ {TARGET_RATIO:g}× python-socketio ({label}): {r:.1f}× → "
                     f"{'met' if r >= TARGET_RATIO else 'NOT met'}")
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
