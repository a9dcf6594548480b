"""Echo benchmark: volleyio against websockets (asyncio, trio), picows, aiohttp, trio-websocket.

    python benchmarks/echo/run.py [--quick] [--servers a,b] [--scenarios a,b,c,d] [--json out.json]

Each server runs in its own process pinned to core 0 (``taskset -c 0``); the load
generator is C (``loadgen.c``, compiled here with gcc) pinned to core 1, so it never
competes with the server and is not the bottleneck (it spends a few microseconds per
message). Loopback only; every run is bounded by a message count and a time cap.

Scenarios:
  (a) 1 connection ping-pong, 32 B: messages/s and server CPU seconds per 100k messages
      (user+system from /proc/PID/stat). The bare trio TCP echoes (trio.SocketStream,
      and trio's socket layer with wait_readable) run the same exchange without framing.
  (b) 100 connections x 10 messages in flight, 32 B: messages/s.
  (c) 1 connection, 64 KiB binary, 4 in flight: MB/s (echoed payload).
  (d) RSS per idle connection with 5,000 open connections (fresh server process).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# Process plumbing (pinning, /proc CPU and RSS, server processes) shared with the
# Engine.IO and Socket.IO suites.
sys.path.insert(0, str(HERE.parent / "engineio"))
from benchlib import cpu_seconds, pin, rss_bytes  # noqa: E402
import benchlib  # noqa: E402
#: volleyio twice: an ``async def handler(ws)`` (``async for`` + ``await ws.send``) and a
#: ``MessageHandler`` (callbacks + ``send_nowait``, the shape of picows' listener API).
PEERS = ["volleyio", "volleyio-callbacks", "websockets-asyncio", "websockets-trio", "picows", "aiohttp",
         "trio-websocket"]
BASELINES = ["trio-tcp-stream", "trio-tcp-socket"]
PACKAGES = ["trio", "h11", "websockets", "picows", "aiohttp", "trio-websocket", "wsproto"]


def build_loadgen(workdir: Path) -> Path:
    out = workdir / "loadgen"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(HERE / "loadgen.c")], check=True)
    return out


def start_server(name: str, port: int) -> benchlib.Server:
    """One echo server process from ``servers.py``, pinned to core 0."""
    return benchlib.Server(HERE / "servers.py", name, port)


def run_load(loadgen: Path, mode: str, port: int, conns: int, inflight: int, size: int, total: int,
             cap: float) -> dict[str, Any]:
    out = subprocess.run(
        [*pin(1), str(loadgen), mode, "127.0.0.1", str(port), str(conns), str(inflight), str(size), str(total),
         str(cap)],
        capture_output=True, text=True, timeout=cap + 60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr.strip()[-300:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure(loadgen: Path, name: str, port: int, mode: str, conns: int, inflight: int, size: int, total: int,
            cap: float) -> dict[str, Any]:
    server = start_server(name, port)
    try:
        # Warm-up (imports, first allocations), then the measured run.
        run_load(loadgen, mode, port, conns, min(inflight, 2), size, max(total // 20, 100), cap)
        cpu0 = cpu_seconds(server.pid)
        result = run_load(loadgen, mode, port, conns, inflight, size, total, cap)
        cpu1 = cpu_seconds(server.pid)
    finally:
        server.stop()
    result["server_cpu"] = cpu1 - cpu0
    result["cpu_per_100k"] = (cpu1 - cpu0) * 100_000 / max(result["messages"], 1)
    return result


def measure_idle(loadgen: Path, name: str, port: int, conns: int, cap: float) -> dict[str, Any]:
    server = start_server(name, port)
    try:
        # One short connection first so lazily-imported code is loaded before the baseline.
        run_load(loadgen, "ws", port, 1, 1, 32, 100, cap)
        time.sleep(0.3)
        before = rss_bytes(server.pid)
        proc = subprocess.Popen(
            [*pin(1), str(loadgen), "idle", "127.0.0.1", str(port), str(conns), "0", "0", "0", str(cap)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        if not line.startswith('{"ready"'):
            proc.wait(10)
            raise RuntimeError(f"idle loadgen failed: {proc.stderr.read()[-300:] if proc.stderr else ''}")
        time.sleep(1.5)  # let the server finish every handshake
        after = rss_bytes(server.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(30)
    finally:
        server.stop()
    return {"rss_before": before, "rss_after": after, "per_conn": (after - before) / conns}


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            found[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            found[pkg] = "not installed"
    sys.path.insert(0, str(ROOT / "src"))
    import volleyio
    from volleyio import _speedups

    found["volleyio"] = f"{volleyio.__version__} (speedups: {_speedups.IMPLEMENTATION})"
    gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    found["gcc (loadgen)"] = gcc
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer messages (a smoke run)")
    parser.add_argument("--servers", default=",".join(PEERS))
    parser.add_argument("--scenarios", default="a,b,c,d")
    parser.add_argument("--idle-conns", type=int, default=5000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--port", type=int, default=18800)
    args = parser.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    scenarios = set(args.scenarios.split(","))
    scale = 0.1 if args.quick else 1.0
    cap = 60.0
    results: dict[str, dict[str, Any]] = {}
    port = args.port
    with tempfile.TemporaryDirectory() as tmp:
        loadgen = build_loadgen(Path(tmp))
        for name in servers + (BASELINES if "a" in scenarios else []):
            res: dict[str, Any] = {}
            results[name] = res
            is_baseline = name in BASELINES
            try:
                if "a" in scenarios:
                    port += 1
                    res["a"] = measure(loadgen, name, port, "raw" if is_baseline else "ws", 1, 1, 32,
                                       int(100_000 * scale), cap)
                if is_baseline:
                    continue
                if "b" in scenarios:
                    port += 1
                    res["b"] = measure(loadgen, name, port, "ws", 100, 10, 32, int(1_000_000 * scale), cap)
                if "c" in scenarios:
                    port += 1
                    res["c"] = measure(loadgen, name, port, "ws", 1, 4, 65536, int(20_000 * scale), cap)
                if "d" in scenarios:
                    port += 1
                    res["d"] = measure_idle(loadgen, name, port, args.idle_conns, cap)
            except Exception as exc:  # noqa: BLE001 - report the failure in the table, go on
                res["error"] = str(exc)
            print(f"{name}: {json.dumps(res)}", file=sys.stderr, flush=True)
    info = versions()
    report = render(results, info, scenarios)
    print(report)
    if args.json:
        args.json.write_text(json.dumps({"versions": info, "results": results}, indent=2))


def render(results: dict[str, dict[str, Any]], info: dict[str, str], scenarios: set[str]) -> str:
    def cell(res: dict[str, Any], key: str, field: str, fmt: str) -> str:
        if key not in res:
            return "error" if "error" in res else "–"
        value = res[key][field]
        incomplete = key != "d" and not res[key].get("complete", True)
        return format(value, fmt) + (" (capped)" if incomplete else "")

    lines = [
        "| server | (a) 1 conn ping-pong msg/s | (a) server CPU s / 100k msg | (b) 100×10 msg/s "
        "| (c) 64 KiB MB/s | (d) RSS KiB / idle conn |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        d = cell(res, "d", "per_conn", ".0f")
        if d not in ("–", "error"):
            d = f"{res['d']['per_conn'] / 1024:.1f}"
        lines.append(
            f"| {name} | {cell(res, 'a', 'msgs_per_s', ',.0f')} | {cell(res, 'a', 'cpu_per_100k', '.2f')} "
            f"| {cell(res, 'b', 'msgs_per_s', ',.0f')} | {cell(res, 'c', 'mb_per_s', ',.0f')} | {d} |"
        )
    lines.append("")
    p = results.get("picows", {})
    base = results.get("trio-tcp-stream", {})
    sock = results.get("trio-tcp-socket", {})

    def ratio(a: dict[str, Any], b: dict[str, Any], key: str, field: str) -> float | None:
        try:
            return float(a[key][field]) / float(b[key][field])
        except (KeyError, ZeroDivisionError, TypeError):
            return None

    for name in ("volleyio", "volleyio-callbacks"):
        if name not in results:
            continue
        v = results[name]
        lines.append(f"Targets ({name}):")
        checks = [
            ("(b) ≥ 1.5× picows msg/s", ratio(v, p, "b", "msgs_per_s"), lambda r: r >= 1.5),
            ("(a) CPU/msg ≤ 1.2× bare trio TCP echo (SocketStream)", ratio(v, base, "a", "cpu_per_100k"),
             lambda r: r <= 1.2),
            ("(c) ≥ 0.9× picows MB/s", ratio(v, p, "c", "mb_per_s"), lambda r: r >= 0.9),
        ]
        for label, r, ok in checks:
            if r is None:
                lines.append(f"- {label}: not measured")
            else:
                lines.append(f"- {label}: {r:.2f}× → {'met' if ok(r) else 'NOT met'}")
        r = ratio(v, sock, "a", "cpu_per_100k")
        if r is not None:  # a stricter reference than the target's, for information
            lines.append(f"- (a) CPU/msg vs bare trio socket-layer echo (wait_readable): {r:.2f}×")
        if "d" in v:
            kib = v["d"]["per_conn"] / 1024
            lines.append(f"- (d) ≤ 8 KiB per idle connection: {kib:.1f} KiB → {'met' if kib <= 8 else 'NOT met'}")
    lines.append("")
    lines.append("Versions: " + ", ".join(f"{k} {val}" for k, val in info.items()))
    lines.append(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
                 "server pinned to core 0, C load generator to core 1.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
