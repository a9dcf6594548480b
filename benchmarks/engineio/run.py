"""Engine.IO benchmark: volleyio.trio.serve_engineio against python-engineio and Node engine.io.

    python benchmarks/engineio/run.py [--quick] [--servers a,b] [--scenarios ws,poll,idle-ws,idle-poll]
                                      [--sessions 100] [--idle-sessions 2000] [--json out.json] [--rounds 3]

Every server runs --rounds times (default 3), the servers' order rotated each round; the
tables show the median of the rounds and (min..max). Servers: volleyio; python-engineio with
its default ``async_handlers=True`` and ``-sync`` (``async_handlers=False``, its recommended
fast configuration); Node engine.io with ws's native add-ons (bufferutil, utf-8-validate:
installed in tests/js, loaded automatically; node_server.js fails if they cannot load) and
``-purejs`` (WS_NO_BUFFER_UTIL=1, WS_NO_UTF_8_VALIDATE=1); and ``floor``, our floor (not an
Engine.IO server: WebSocket scenarios only). Ratios: volleyio over the best Node row, the
best Python row and the floor. The load generator checks every echo against the message
sent: a wrong answer voids the run (exit status 1, "RUN VOID" on stderr).

Every server echoes each Engine.IO message back (``servers.py``); each runs in a fresh
process pinned to core 0. The load generator is C (``eioload.c``, compiled here with gcc -O2)
pinned to core 1; it reports its own CPU time, so a saturated generator shows in the
"gen util" column (1.0 = its core was busy the whole run).

Scenarios:
  ws         100 sessions opened straight on WebSocket, 10 text messages of 32 B in flight per
             session: messages/s (round trips) and server CPU seconds per 100k messages.
  poll       100 sessions over HTTP long-polling (one keep-alive connection with a GET always
             pending, one for POSTs of up to 16 packets), 10 messages in flight per session.
  idle-ws    RSS per idle session with 2,000 WebSocket sessions open (fresh server process).
  idle-poll  RSS per idle session with 2,000 polling sessions, each with a parked GET.
Server CPU is user+system time of the server process (all threads) from /proc/PID/stat
around the measured run (after a warm-up run). Measures and prints only; nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

HERE = benchlib.HERE
SERVERS = ["volleyio", "python-engineio", "python-engineio-sync", "node-engine.io", "node-engine.io-purejs", "floor"]
# What each server row is (the table prints it); "-sync"/"-purejs" rows are the peers' other
# configurations, "floor" is ours: not an Engine.IO server.
CONFIGS = {
    "volleyio": "serve_engineio, async for / await send",
    "python-engineio": "aiohttp, async_handlers=True (default)",
    "python-engineio-sync": "aiohttp, async_handlers=False (recommended fast)",
    # ws 8 on Node >= 18.14 validates UTF-8 with buffer.isUtf8 and never loads utf-8-validate;
    # bufferutil masks frames of 48 B and up (the 32 B messages here stay in JS either way).
    "node-engine.io": "ws with bufferutil + utf-8-validate installed (bufferutil loaded; ws uses Node's isUtf8)",
    "node-engine.io-purejs": "ws without native add-ons (WS_NO_BUFFER_UTIL=1, WS_NO_UTF_8_VALIDATE=1)",
    "floor": "FLOOR: callback WebSocket echoing '4...' as it came; no session (WebSocket scenarios only)",
}
PYTHON_PEERS = ["python-engineio", "python-engineio-sync"]
NODE_PEERS = ["node-engine.io", "node-engine.io-purejs"]
FLOORS = ["floor"]
FLOOR_SCENARIOS = ["ws", "idle-ws"]
SCENARIOS = ["ws", "poll", "idle-ws", "idle-poll"]
PACKAGES = ["trio", "h11", "aiohttp", "python-engineio"]
NODE_PACKAGES = ["engine.io", "ws"]
PATH = "/engine.io/"
TARGET_KIB = 12.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10x fewer messages, 500 idle sessions (smoke run)")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--inflight", type=int, default=10)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--idle-sessions", type=int)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--port", type=int, default=18900)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over all servers, order rotated each round; tables show medians (min..max)")
    args = parser.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    scale = 0.1 if args.quick else 1.0
    cap = 10.0 if args.quick else 30.0
    idle_n = args.idle_sessions or (500 if args.quick else 2000)
    totals = {"ws": int(200_000 * scale), "poll": int(100_000 * scale)}
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in servers}
    check_failures: list[str] = []
    load_before = benchlib.loadavg()
    started = time.time()
    port = args.port
    with tempfile.TemporaryDirectory() as tmp:
        loadgen = benchlib.build_loadgen(Path(tmp))
        for round_no, name in ((r, n) for r in range(args.rounds) for n in benchlib.rotated(servers, r)):
            res: dict[str, Any] = {}
            for scenario in scenarios:
                if name in FLOORS and scenario not in FLOOR_SCENARIOS:
                    continue  # the floor has no polling
                port += 1
                try:
                    server = benchlib.Server(HERE / "servers.py", name, port)
                except Exception as exc:  # noqa: BLE001 - report the failure in the table, go on
                    res[scenario] = {"error": str(exc)}
                    continue
                try:
                    if scenario in ("ws", "poll"):
                        res[scenario] = benchlib.measure_load(
                            loadgen, server, f"{scenario}-echo", port, PATH, args.sessions, args.inflight,
                            args.size, totals[scenario], cap, warmup=max(totals[scenario] // 20, 1000))
                        r = res[scenario]
                        r["cpu_per_100k"] = round(r["server_cpu"] * 100_000 / max(r["messages"], 1), 3)
                        if scenario == "poll":
                            # How well the server batches: echoed messages per GET response.
                            r["msgs_per_get"] = round(r["messages"] / max(r["get_responses"], 1), 2)
                    else:
                        # Load the code paths of both transports before the baseline.
                        benchlib.run_load(loadgen, "ws-echo", port, PATH, 2, 1, 32, 200, cap)
                        if name not in FLOORS:  # the floor serves WebSocket only
                            benchlib.run_load(loadgen, "poll-echo", port, PATH, 2, 1, 32, 200, cap)
                        mode = "ws-idle" if scenario == "idle-ws" else "poll-idle"
                        res[scenario] = benchlib.measure_idle(loadgen, server, mode, port, PATH, idle_n, cap + 30)
                except benchlib.CheckFailed as exc:
                    res[scenario] = {"error": f"wrong answer: {exc}"}
                    check_failures.append(f"{name} {scenario}: {exc}")
                except Exception as exc:  # noqa: BLE001
                    res[scenario] = {"error": str(exc)}
                finally:
                    server.stop()
                print(f"round {round_no + 1} {name} {scenario}: {json.dumps(res[scenario])}", file=sys.stderr,
                      flush=True)
                rounds[name].setdefault(scenario, []).append(res[scenario])
    results = {name: {key: benchlib.summarize(runs) for key, runs in by_key.items()}
               for name, by_key in rounds.items()}
    info = benchlib.versions(PACKAGES, NODE_PACKAGES)
    meta = {"load_before": load_before, "load_after": benchlib.loadavg(), "seconds": round(time.time() - started, 1),
            "quick": args.quick, "sessions": args.sessions, "inflight": args.inflight, "size": args.size,
            "idle_sessions": idle_n, "rounds": args.rounds, "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started))}
    print(json.dumps({"meta": meta, "versions": info, "results": results}))
    print()
    print(render(results, info, meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "versions": info, "results": results}, indent=2))
    if check_failures:
        sys.exit("RUN VOID, the load generator got wrong answers:\n" + "\n".join(check_failures))


def render(results: dict[str, dict[str, Any]], info: dict[str, str], meta: dict[str, Any]) -> str:
    def get(res: dict[str, Any], scenario: str, field: str, fmt: str, scale: float = 1.0) -> str:
        return benchlib.spread(res.get(scenario), field, fmt, scale)

    def gen(res: dict[str, Any]) -> str:
        utils = [r["gen_util"] for r in res.values() if isinstance(r, dict) and "gen_util" in r]
        return f"{max(utils):.2f}" if utils else "–"

    n, k = meta["sessions"], meta["inflight"]
    lines = [
        f"| server | WS msg/s ({n}×{k}) | WS server CPU s/100k msg | polling msg/s ({n}×{k}) "
        f"| polling server CPU s/100k msg | polling msgs/GET | idle WS KiB/session | idle polling KiB/session "
        f"| loadgen util (max) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        lines.append(
            f"| {name} | {get(res, 'ws', 'msgs_per_s', ',.0f')} | {get(res, 'ws', 'cpu_per_100k', '.2f')} "
            f"| {get(res, 'poll', 'msgs_per_s', ',.0f')} | {get(res, 'poll', 'cpu_per_100k', '.2f')} "
            f"| {get(res, 'poll', 'msgs_per_get', '.1f')} "
            f"| {get(res, 'idle-ws', 'per_session', '.1f', 1 / 1024)} "
            f"| {get(res, 'idle-poll', 'per_session', '.1f', 1 / 1024)} | {gen(res)} |"
        )
    lines += ["", f"Medians of {meta['rounds']} round(s), (min..max) over the rounds; server order rotated each round.",
              "", "| server | configuration |", "|---|---|"]
    lines += [f"| {name} | {CONFIGS.get(name, '')} |" for name in results]
    lines += ["", "volleyio / peer, medians (speed > 1 is faster; CPU and memory < 1 is less):", ""]
    metrics = [("ws", "msgs_per_s", "WebSocket msg/s", True), ("ws", "cpu_per_100k", "WebSocket CPU per msg", False),
               ("poll", "msgs_per_s", "polling msg/s", True), ("poll", "cpu_per_100k", "polling CPU per msg", False),
               ("idle-ws", "per_session", "idle WebSocket bytes/session", False),
               ("idle-poll", "per_session", "idle polling bytes/session", False)]
    lines += benchlib.ratio_lines(results, "volleyio", {"best Node": NODE_PEERS, "best Python peer": PYTHON_PEERS,
                                                        "floor": FLOORS}, metrics)
    lines.append("")
    v = results.get("volleyio", {})
    ratios = []
    for peer in ("python-engineio", "node-engine.io"):
        p = results.get(peer, {})
        for scenario in ("ws", "poll"):
            try:
                ratios.append(f"{scenario} msg/s {v[scenario]['msgs_per_s'] / p[scenario]['msgs_per_s']:.2f}× {peer}")
            except (KeyError, ZeroDivisionError, TypeError):
                pass
    if ratios:
        lines.append("volleyio vs peers: " + "; ".join(ratios) + ".")
    for scenario in ("idle-ws", "idle-poll"):
        r = v.get(scenario, {})
        if "per_session" in r:
            kib = r["per_session"] / 1024
            lines.append(f"Target ≤ {TARGET_KIB:g} KiB per idle session ({scenario}, {int(r['sessions']):,} sessions): "
                         f"{kib:.1f} KiB → {'met' if kib <= TARGET_KIB else 'NOT met'}")
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
