"""Cluster benchmark: two server processes joined through Redis, for volleyio, Node socket.io and python-socketio.

    python benchmarks/cluster/run.py [--quick] [--servers a,b] [--scenarios ack,bcast]
                                     [--clients 100] [--inflight 10] [--bcast-clients 1000] [--json out.json]

Servers (``servers.py``): ``volleyio-streams`` / ``node-streams`` (Redis Streams adapters),
``volleyio-sharded`` / ``node-sharded`` (sharded pub/sub adapters), ``python-socketio``
(``AsyncRedisManager``, classic pub/sub). Every run starts its own redis-server (no
persistence, flushed between runs) and two server processes of one kind; the clients of
the C load generator (``../engineio/eioload.c``, WebSocket) alternate between the two.

Scenarios:
  bcast  1,000 clients in room "bench", 500 per process; client 0 (on process A) emits
         "bcast", A emits "tick" to the room: A delivers to its 500 and publishes through
         Redis, B delivers to its 500. The next broadcast starts once all 1,000 deliveries
         arrived. Emit → last delivery (mean, p50, p99), CPU ms per broadcast of each
         process and of redis-server.
  ack    100 clients (50 per process), each with 10 events with an ack in flight: acks/s
         and CPU per 100k acks (both processes, and Redis: acks stay local, so this is the
         price of being in a cluster).
CPU is user+system from /proc/PID/stat, read after every client connected and before any
disconnect (a warm-up run precedes). Servers share core 0, the load generator has core 1,
Redis is not pinned. Measures and prints only; nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "engineio"))
import benchlib  # noqa: E402

SERVERS = ["volleyio-streams", "node-streams", "volleyio-sharded", "node-sharded", "python-socketio"]
PACKAGES = ["trio", "coredis", "msgpack", "aiohttp", "python-engineio", "python-socketio", "redis"]
NODE_PACKAGES = ["socket.io", "@socket.io/redis-streams-adapter", "@socket.io/redis-adapter", "redis"]
PATH = "/socket.io/"


class Redis:
    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}"

    def flush(self) -> None:
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        subprocess.run([cli, "-p", str(self.port), "flushall"], capture_output=True, check=False)

    def stop(self) -> None:
        self.proc.terminate()  # the redis-server this script started, by PID
        self.proc.wait(10)


def measure(loadgen: Path, pids: dict[str, int], mode: str, ports: str, conns: int, inflight: int, size: int,
            total: int, cap: float, warmup: int) -> dict[str, Any]:
    """benchlib.measure_load, with the CPU time of several processes."""
    if warmup:
        benchlib.run_load(loadgen, mode, ports, PATH, conns, min(inflight, 2), size, warmup, cap)  # type: ignore[arg-type]
        time.sleep(0.3)
    proc = subprocess.Popen(
        [*benchlib.pin(1), str(loadgen), mode, ports, PATH, str(conns), str(inflight), str(size), str(total), str(cap)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, EIOLOAD_SYNC="1"),
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = proc.stdout.readline()
        if not line.startswith('{"connected"'):
            proc.wait(10)
            raise RuntimeError(f"loadgen {mode} failed: {proc.stderr.read()[-300:] if proc.stderr else ''}")
        time.sleep(0.3)
        cpu0 = {name: benchlib.cpu_seconds(pid) for name, pid in pids.items()}
        proc.stdin.write("\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        cpu1 = {name: benchlib.cpu_seconds(pid) for name, pid in pids.items()}
        if not line.startswith("{"):
            proc.wait(10)
            raise RuntimeError(f"loadgen {mode} failed: {proc.stderr.read()[-300:] if proc.stderr else ''}")
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()  # the load generator this script started
            proc.wait()
    result: dict[str, Any] = json.loads(line)
    for name in pids:
        result[f"cpu_{name}"] = round(cpu1[name] - cpu0[name], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10x fewer acks and broadcasts (smoke run)")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--scenarios", default="bcast,ack")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--inflight", type=int, default=10)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--bcast-clients", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--port", type=int, default=19400)
    args = parser.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    scale = 0.1 if args.quick else 1.0
    cap = 10.0 if args.quick else 40.0
    ack_total = int(100_000 * scale)
    bcast_total = int(200 * scale)
    results: dict[str, dict[str, Any]] = {}
    load_before = benchlib.loadavg()
    started = time.time()
    port = args.port
    with tempfile.TemporaryDirectory() as tmp:
        loadgen = benchlib.build_loadgen(Path(tmp))
        redis = Redis(Path(tmp))
        os.environ["BENCH_REDIS_URL"] = redis.url
        try:
            for name in servers:
                res: dict[str, Any] = {}
                results[name] = res
                for key in scenarios:
                    redis.flush()
                    port += 2
                    nodes: list[benchlib.Server] = []
                    try:
                        for offset in (0, 1):
                            nodes.append(benchlib.Server(HERE / "servers.py", name, port + offset))
                        time.sleep(1.0)  # the cluster forms (subscriptions, heartbeats)
                        pids = {"a": nodes[0].pid, "b": nodes[1].pid, "redis": redis.proc.pid}
                        ports = f"{port},{port + 1}"
                        if key == "bcast":
                            r = measure(loadgen, pids, "sio-bcast", ports, args.bcast_clients, 0, args.size,
                                        bcast_total, cap, warmup=max(bcast_total // 10, 5))
                            n = max(r["broadcasts"], 1)
                            for who in pids:
                                r[f"ms_{who}"] = round(r[f"cpu_{who}"] * 1000 / n, 3)
                        else:
                            r = measure(loadgen, pids, "sio-ack", ports, args.clients, args.inflight, args.size,
                                        ack_total, min(cap, 30.0), warmup=max(ack_total // 20, 1000))
                            n = max(r["messages"], 1)
                            for who in pids:
                                r[f"per100k_{who}"] = round(r[f"cpu_{who}"] * 100_000 / n, 3)
                        r["servers_alive"] = all(node.alive() for node in nodes)
                        res[key] = r
                    except Exception as exc:  # noqa: BLE001 - report the failure in the table, go on
                        res[key] = {"error": str(exc)[-300:]}
                    finally:
                        for node in nodes:
                            node.stop()
                    print(f"{name} {key}: {json.dumps(res[key])}", file=sys.stderr, flush=True)
        finally:
            redis.stop()
    info = benchlib.versions(PACKAGES, NODE_PACKAGES)
    redis_version = subprocess.run([shutil.which("redis-server") or "/usr/bin/redis-server", "--version"],
                                   capture_output=True, text=True).stdout.split()
    info["redis-server"] = next((w.split("=")[1] for w in redis_version if w.startswith("v=")), "?")
    meta = {"load_before": load_before, "load_after": benchlib.loadavg(), "seconds": round(time.time() - started, 1),
            "quick": args.quick, "clients": args.clients, "inflight": args.inflight, "size": args.size,
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
        if field not in r:
            return "–"
        value = format(r[field], fmt)
        if r.get("complete") is False:
            value += " (capped)"
        return value

    b = meta["bcast_clients"]
    lines = [f"Room broadcast to {b:,} clients over 2 processes through Redis ({meta['broadcasts']} broadcasts, "
             "one at a time):", "",
             "| server | emit → last delivery mean ms | p50 ms | p99 ms | CPU ms/broadcast A | B | Redis "
             "| A+B+Redis | loadgen util |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, res in results.items():
        r = res.get("bcast", {})
        total = "–"
        if all(f"ms_{w}" in r for w in ("a", "b", "redis")):
            total = f"{r['ms_a'] + r['ms_b'] + r['ms_redis']:.2f}"
        lines.append(
            f"| {name} | {get(res, 'bcast', 'mean_ms', '.2f')} | {get(res, 'bcast', 'p50_ms', '.2f')} "
            f"| {get(res, 'bcast', 'p99_ms', '.2f')} | {get(res, 'bcast', 'ms_a', '.2f')} "
            f"| {get(res, 'bcast', 'ms_b', '.2f')} | {get(res, 'bcast', 'ms_redis', '.2f')} | {total} "
            f"| {get(res, 'bcast', 'gen_util', '.2f')} |")
    c, n = meta["clients"], meta["inflight"]
    lines += ["", f"Acks, {c} clients × {n} in flight over 2 processes:", "",
              "| server | acks/s | CPU s/100k acks A | B | Redis | loadgen util |", "|---|---:|---:|---:|---:|---:|"]
    for name, res in results.items():
        lines.append(
            f"| {name} | {get(res, 'ack', 'msgs_per_s', ',.0f')} | {get(res, 'ack', 'per100k_a', '.2f')} "
            f"| {get(res, 'ack', 'per100k_b', '.2f')} | {get(res, 'ack', 'per100k_redis', '.2f')} "
            f"| {get(res, 'ack', 'gen_util', '.2f')} |")
    lines.append("")
    lines.append("Versions: " + ", ".join(f"{key} {val}" for key, val in info.items()))
    lines.append(benchlib.machine_line().replace("server pinned to core 0", "both servers pinned to core 0, Redis unpinned"))
    lines.append(f"Run: {meta['started_utc']} UTC, {meta['seconds']} s; load average before "
                 f"{meta['load_before']}, after {meta['load_after']} (1/5/15 min).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
