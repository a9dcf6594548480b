"""Shared plumbing of benchmarks/engineio, benchmarks/socketio and benchmarks/echo.

Server processes pinned to core 0, the C load generator (``eioload.c``) pinned to core 1,
CPU time from ``/proc/PID/stat`` (user+system of the whole process, every thread), RSS from
``/proc/PID/statm``, peer versions, machine load.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def build_loadgen(workdir: Path) -> Path:
    out = workdir / "eioload"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(HERE / "eioload.c")], check=True)
    return out


def pin(core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core)]
    return []


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Server:
    """One server process (``python SCRIPT NAME PORT``, which may exec node), pinned to core 0."""

    def __init__(self, script: Path, name: str, port: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
        self.name = name
        self.proc = subprocess.Popen(
            [*pin(0), sys.executable, str(script), name, str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            err = self.proc.stderr.read()[-600:] if self.proc.stderr and self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"{name} server did not start: {err}")
        time.sleep(0.3)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # the process this script started, by PID
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_load(loadgen: Path, mode: str, port: int, path: str, conns: int, inflight: int, size: int,
             total: int, cap: float) -> dict[str, Any]:
    out = subprocess.run(
        [*pin(1), str(loadgen), mode, str(port), path, str(conns), str(inflight), str(size), str(total),
         str(cap)],
        capture_output=True, text=True, timeout=cap + 120,
    )
    if out.returncode != 0:
        raise loadgen_error(mode, out.returncode, out.stderr)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure_load(loadgen: Path, server: Server, mode: str, port: int, path: str, conns: int, inflight: int,
                 size: int, total: int, cap: float, warmup: int) -> dict[str, Any]:
    """A warm-up run, then the measured run; the server's CPU time is read after every client
    connected and before any disconnects, so handshakes and teardown are not counted."""
    if warmup:
        run_load(loadgen, mode, port, path, conns, min(inflight, 2), size, warmup, cap)
        time.sleep(0.2)
    proc = subprocess.Popen(
        [*pin(1), str(loadgen), mode, str(port), path, str(conns), str(inflight), str(size), str(total), str(cap)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, EIOLOAD_SYNC="1"),
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = proc.stdout.readline()
        if not line.startswith('{"connected"'):
            proc.wait(10)
            raise loadgen_error(mode, proc.returncode, proc.stderr.read() if proc.stderr else "")
        time.sleep(0.2)  # the server finishes the last handshakes
        cpu0 = cpu_seconds(server.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        cpu1 = cpu_seconds(server.pid)
        if not line.startswith("{"):
            proc.wait(10)
            raise loadgen_error(mode, proc.returncode, proc.stderr.read() if proc.stderr else "")
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()  # the load generator this script started
            proc.wait()
    result: dict[str, Any] = json.loads(line)
    result["server_cpu"] = round(cpu1 - cpu0, 3)
    result["server_util"] = round((cpu1 - cpu0) / max(result["seconds"], 1e-9), 3)
    return result


def measure_idle(loadgen: Path, server: Server, mode: str, port: int, path: str, conns: int,
                 cap: float, settle: float = 2.0) -> dict[str, Any]:
    """RSS of the server before and while ``conns`` idle sessions are open."""
    time.sleep(0.5)
    before = rss_bytes(server.pid)
    proc = subprocess.Popen(
        [*pin(1), str(loadgen), mode, str(port), path, str(conns), "0", "0", "0", str(cap)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = proc.stdout.readline()
        if not line.startswith('{"ready"'):
            proc.wait(10)
            raise RuntimeError(f"idle loadgen failed: {proc.stderr.read()[-300:] if proc.stderr else ''}")
        opened = json.loads(line)
        time.sleep(settle)  # let the server finish every handshake and park every GET
        after = rss_bytes(server.pid)
        alive = server.alive()
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()  # the load generator this script started
            proc.wait()
    return {"sessions": conns, "rss_before": before, "rss_after": after, "per_session": (after - before) / conns,
            "open_seconds": opened.get("open_seconds"), "server_alive": alive}


def versions(packages: list[str], node_packages: list[str]) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for pkg in packages:
        try:
            found[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            found[pkg] = "not installed"
    sys.path.insert(0, str(ROOT / "src"))
    import volleyio
    from volleyio import _speedups

    found["volleyio"] = f"{volleyio.__version__} (speedups: {_speedups.IMPLEMENTATION})"
    node = shutil.which("node")
    found["node"] = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip() if node else "–"
    for pkg in node_packages:
        try:
            found[f"{pkg} (npm)"] = json.loads((NODE_MODULES / pkg / "package.json").read_text())["version"]
        except OSError:
            found[f"{pkg} (npm)"] = "not installed"
    found["gcc (loadgen)"] = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    return found


def machine_line() -> str:
    return (f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; server pinned to core 0, "
            "C load generator to core 1.")


# ---------------------------------------------------------------- rounds, checks, ratios


class CheckFailed(RuntimeError):
    """The load generator got a wrong answer (payload or ack id): the run is void."""


def loadgen_error(mode: str, returncode: int | None, stderr: str) -> RuntimeError:
    if returncode == 3 or "CHECK FAILED" in stderr:
        return CheckFailed(f"loadgen {mode}: {stderr.strip()[-300:]}")
    return RuntimeError(f"loadgen {mode} failed: {stderr.strip()[-300:]}")


def rotated(names: list[str], round_no: int) -> list[str]:
    """Round r starts with the r-th server, so no server always runs first (cold machine)
    or last (warm, or loaded by whatever started meanwhile)."""
    if not names:
        return []
    k = round_no % len(names)
    return names[k:] + names[:k]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the rounds' numeric fields (same names), with ``FIELD_min``/``FIELD_max``
    and ``rounds``; a round that failed counts in ``errors``. ``complete`` is False if any
    round was capped, ``server_alive`` False if the server died in any round."""
    ok = [r for r in runs if "error" not in r]
    errors = [r["error"] for r in runs if "error" in r]
    if not ok:
        return {"error": errors[0] if errors else "no rounds", "rounds": 0, "errors": errors}
    out: dict[str, Any] = {"rounds": len(ok), "errors": errors}
    for field, value in ok[0].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        values = sorted(float(r[field]) for r in ok if isinstance(r.get(field), (int, float)))
        mid = len(values) // 2
        out[field] = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
        out[f"{field}_min"] = values[0]
        out[f"{field}_max"] = values[-1]
    out["complete"] = all(r.get("complete", True) is not False for r in ok)
    out["server_alive"] = all(r.get("server_alive", True) is not False for r in ok)
    out["per_round"] = ok
    return out


def spread(r: dict[str, Any] | None, field: str, fmt: str, scale: float = 1.0) -> str:
    """A table cell: the median and, over more than one round, ``min..max``."""
    if r is None:
        return "–"
    if "error" in r:
        return "error"
    if field not in r:
        return "–"
    text = format(r[field] * scale, fmt)
    if r.get("rounds", 1) > 1 and f"{field}_min" in r:
        text += f" ({format(r[field + '_min'] * scale, fmt)}..{format(r[field + '_max'] * scale, fmt)})"
    if r.get("complete") is False:
        text += " (capped)"
    if r.get("server_alive") is False:
        text += " (server died)"
    if r.get("errors"):
        text += f" ({len(r['errors'])} round(s) failed)"
    return text


def ratio_lines(results: dict[str, dict[str, Any]], ours: str, groups: dict[str, list[str]],
                metrics: list[tuple[str, str, str, bool]]) -> list[str]:
    """A markdown table of ``ours / peer`` for each metric (median over median) against the
    best server of each group (best by that metric: highest when ``higher_is_better``,
    else lowest). ``metrics``: (scenario key, field, label, higher_is_better)."""
    lines = ["| metric (median / median) | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
    mine = results.get(ours, {})
    for key, field, label, higher in metrics:
        cells = []
        for names in groups.values():
            cands = [(results[n][key][field], n) for n in names
                     if isinstance(results.get(n, {}).get(key), dict) and field in results[n][key]]
            v = mine.get(key, {}).get(field) if isinstance(mine.get(key), dict) else None
            if not cands or v is None:
                cells.append("–")
                continue
            best, who = max(cands) if higher else min(cands)
            cells.append(f"{v / best:.2f}× ({who})" if best else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines
