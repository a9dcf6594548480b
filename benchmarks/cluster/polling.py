"""Long-polling through a balancer: round-robin with cluster forwarding vs sticky (ip_hash).

    python benchmarks/cluster/polling.py [--quick] [--sessions 50] [--inflight 10] [--json out.json]

One run, one redis-server, a fresh nginx (Debian /usr/sbin/nginx, generated config as in
tests/_nginx_support.py) and fresh Engine.IO echo processes (``polling_server.py``: every
process is a cluster node with request forwarding on) per setup:

  rr-1       nginx round-robin -> 1 process (nothing to forward: the baseline)
  rr-2       nginx round-robin -> 2 processes: about half of all requests land on the node
             that does not own the session and are forwarded through Redis
  sticky-2   nginx ip_hash -> 2 processes; the load generator spreads its sessions over 8
             source addresses (127.0.x.1) so that ip_hash spreads them: nothing is forwarded

The C load generator (``../engineio/eioload.c``, mode ``poll-echo``) keeps ``inflight``
32-byte messages in flight per session (a GET always pending, POSTs of up to 16 packets).
Reported: echoed messages/s, mean round trip by Little's law (sessions x inflight /
msgs/s: exact for this closed loop), CPU seconds per 100k messages of the server processes,
nginx and redis-server (user+system from /proc, around the measured run, after a warm-up).
Nothing is pinned (the machine has 2 cores, shared). Measures and prints only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "benchmarks" / "engineio"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))
import benchlib  # noqa: E402
from _nginx_support import NginxProcess  # noqa: E402
from run import Redis  # noqa: E402

SETUPS = {"rr-1": (1, False), "rr-2": (2, False), "sticky-2": (2, True)}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.append(int(entry.name))
    return out


def start_server(port: int, url: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, str(HERE / "polling_server.py"), str(port), url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"polling server did not start: {proc.stderr.read()[-500:] if proc.stderr else ''}")
    return proc


def measure(loadgen: Path, port: int, pids: dict[str, list[int]], sessions: int, inflight: int, total: int,
            cap: float, spread: int) -> dict[str, Any]:
    env = dict(os.environ, EIOLOAD_SRC_SPREAD=str(spread))
    args = [str(loadgen), "poll-echo", str(port), "/engine.io/", str(sessions)]
    warm = subprocess.run([*args, "2", "32", str(max(total // 10, 1000)), str(cap)], capture_output=True,
                          text=True, env=env, timeout=cap + 60)
    if warm.returncode != 0:
        raise RuntimeError(f"warm-up failed: {warm.stderr[-300:]}")
    proc = subprocess.Popen([*args, str(inflight), "32", str(total), str(cap)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(env, EIOLOAD_SYNC="1"))
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = proc.stdout.readline()
        if not line.startswith('{"connected"'):
            raise RuntimeError(f"loadgen failed: {proc.stderr.read()[-300:] if proc.stderr else ''}")
        time.sleep(0.3)
        cpu0 = {k: sum(benchlib.cpu_seconds(p) for p in v) for k, v in pids.items()}
        split0 = [benchlib.cpu_seconds(p) for p in pids["servers"]]
        proc.stdin.write("\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        cpu1 = {k: sum(benchlib.cpu_seconds(p) for p in v) for k, v in pids.items()}
        split1 = [benchlib.cpu_seconds(p) for p in pids["servers"]]
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()  # the load generator this script started
            proc.wait()
    result: dict[str, Any] = json.loads(line)
    per = 100_000 / max(result["messages"], 1)
    for key in pids:
        result[f"cpu_{key}_per100k"] = round((cpu1[key] - cpu0[key]) * per, 3)
    result["cpu_split"] = [round((c1 - c0) * per, 3) for c0, c1 in zip(split0, split1)]
    result["rtt_ms"] = round(sessions * inflight / max(result["msgs_per_s"], 1e-9) * 1e3, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--inflight", type=int, default=10)
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    total = 20_000 if args.quick else 200_000
    cap = 10.0 if args.quick else 30.0
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        loadgen = benchlib.build_loadgen(Path(tmp))
        redis = Redis(Path(tmp))
        try:
            for name in args.setups.split(","):
                n, sticky = SETUPS[name]
                redis.flush()
                servers: list[subprocess.Popen[str]] = []
                nginx: NginxProcess | None = None
                try:
                    ports = [free_port() for _ in range(n)]
                    servers = [start_server(p, redis.url) for p in ports]
                    nginx = NginxProcess(Path(tmp) / f"nginx-{name}", ports, sticky=sticky).start()
                    assert nginx.process is not None
                    time.sleep(0.3)
                    pids = {
                        "servers": [s.pid for s in servers],
                        "nginx": [nginx.process.pid, *children(nginx.process.pid)],
                        "redis": [redis.proc.pid],
                    }
                    results[name] = measure(loadgen, nginx.port, pids, args.sessions, args.inflight, total, cap,
                                            8 if sticky else 0)
                    print(name, json.dumps(results[name]), flush=True)
                finally:
                    if nginx is not None:
                        nginx.stop()
                    for s in servers:
                        s.terminate()  # the processes this script started, by PID
                        s.wait(10)
        finally:
            redis.stop()
    meta = {"sessions": args.sessions, "inflight": args.inflight, "total": total,
            "loadavg": benchlib.loadavg(), "machine": benchlib.machine_line().split("; server")[0] + "; nothing pinned"}
    print()
    print(f"{args.sessions} polling sessions x {args.inflight} messages of 32 B in flight; {meta['machine']}; "
          f"load average after the run {meta['loadavg']}")
    print()
    print("| setup | msgs/s | mean RTT ms | server CPU s/100k (per process) | nginx CPU s/100k "
          "| redis CPU s/100k | gen util |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        split = " + ".join(f"{c:.2f}" for c in r["cpu_split"])
        print(f"| {name} | {r['msgs_per_s']:.0f} | {r['rtt_ms']:.2f} | {r['cpu_servers_per100k']:.2f} ({split}) "
              f"| {r['cpu_nginx_per100k']:.2f} | {r['cpu_redis_per100k']:.2f} | {r['gen_util']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
