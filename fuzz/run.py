"""Run the atheris targets of this directory and report exec counts and findings.

Started by ``scripts/fuzz`` (which builds the sanitizer venv and sets
``VOLLEYIO_SAN_PRELOAD``); see ``scripts/fuzz --help``. Each target runs as its own
process (niceness >= 10) with the sanitizer runtime preloaded, for ``--seconds``;
a native crash (sanitizer report, deadly signal, libFuzzer timeout or OOM) is
recorded and the target restarted for the time left. Findings of the harness
(``fuzz/_harness.py``) are read from the target's artifacts directory.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = [
    "speedups_mask",
    "speedups_utf8",
    "speedups_frames",
    "speedups_encode",
    "websocket",
    "handshake",
    "engineio",
    "socketio",
]
# Lines that tell why a target process died (first match wins).
_CRASH_PATTERNS = [
    re.compile(r"ERROR: AddressSanitizer: .*"),
    re.compile(r"runtime error: .*"),
    re.compile(r"ERROR: libFuzzer: (deadly signal|out-of-memory.*|timeout.*|malloc.*|fuzz target exited)"),
    re.compile(r"ALARM: working on the last Unit for \d+ seconds"),
    re.compile(r"=== Uncaught Python exception: ===.*"),
    re.compile(r"Fatal Python error: .*"),
    re.compile(r"SUMMARY: .*"),
]


def _normalize(line: str) -> str:
    line = re.sub(r"0x[0-9a-f]+", "0x?", line)
    return re.sub(r"\b\d{3,}\b", "N", line).strip()


class TargetRun:
    def __init__(self, name: str, seconds: float, fuzz_dir: Path, extra: list[str], replay: list[str]) -> None:
        self.name = name
        self.seconds = seconds
        # A replay writes elsewhere: the inputs replayed may live in the run's artifacts.
        self.artifacts = fuzz_dir / "artifacts" / (f"{name}-replay" if replay else name)
        self.corpus = fuzz_dir / "corpus" / name
        self.extra = extra
        self.replay = replay
        self.execs = 0
        self.processes = 0
        self.elapsed = 0.0
        self.crashes: dict[str, dict[str, object]] = {}
        self.findings: dict[str, dict[str, object]] = {}
        self.worst: dict[str, float] = {}

    def command(self, remaining: float) -> list[str]:
        cmd = [sys.executable, "-u", str(HERE / f"{self.name}.py")]
        if self.replay:
            return cmd + ["-runs=1"] + self.replay
        cmd += [
            f"-max_total_time={max(1, int(remaining))}",
            "-timeout=300",
            "-rss_limit_mb=3072",
            "-max_len=8192",
            "-len_control=10",  # reach longer inputs sooner (the structured targets are slow)
            "-print_final_stats=1",
            f"-artifact_prefix={self.artifacts}/",
        ]
        dictionary = HERE / "dicts" / f"{self.name}.dict"
        if dictionary.exists():
            cmd.append(f"-dict={dictionary}")
        cmd += self.extra
        cmd.append(str(self.corpus))
        seeds = HERE / "seeds" / self.name
        if seeds.is_dir():
            cmd.append(str(seeds))
        return cmd

    def run(self) -> None:
        shutil.rmtree(self.artifacts, ignore_errors=True)
        self.artifacts.mkdir(parents=True)
        self.corpus.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["VOLLEYIO_FUZZ_ARTIFACTS"] = str(self.artifacts)
        preload = os.environ.get("VOLLEYIO_SAN_PRELOAD", "")
        if preload:
            env["LD_PRELOAD"] = preload
        env["PYTHONPATH"] = str(HERE)
        env.pop("VOLLEYIO_NO_EXTENSIONS", None)
        log_path = self.artifacts / "log.txt"
        started = time.monotonic()
        while True:
            remaining = self.seconds - (time.monotonic() - started)
            if self.processes and (remaining < 5 or self.processes >= 25 or self.replay):
                break
            self.processes += 1
            with open(log_path, "ab") as log:
                log.write(f"\n##### process {self.processes}: {' '.join(self.command(remaining))}\n".encode())
                log.flush()
                proc = subprocess.run(
                    self.command(remaining), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=_lower_priority,
                )
            text = log_path.read_text("utf-8", "replace").rsplit("##### process", 1)[-1]
            self._account(text, proc.returncode)
        self.elapsed = time.monotonic() - started
        self._collect()

    def _account(self, text: str, returncode: int) -> None:
        done = re.findall(r"Done (\d+) runs in", text)
        if done:
            self.execs += int(done[-1])
        else:
            counts = [int(n) for n in re.findall(r"^#(\d+)\s", text, re.M)]
            stats = self._stats()
            self.execs += max(counts[-1] if counts else 0, int(stats.get("execs", 0)))
        stats = self._stats()
        for label, rate in stats.get("worst_seconds_per_byte", {}).items():
            self.worst[label] = max(self.worst.get(label, 0.0), rate)
        if returncode == 0 or self.replay and returncode == 0:
            return
        reason = None
        for pattern in _CRASH_PATTERNS:
            match = pattern.search(text)
            if match:
                reason = _normalize(match.group(0))
                break
        if reason is None:
            reason = f"exit status {returncode}"
        unit = re.search(r"Test unit written to (\S+)", text)
        entry = self.crashes.setdefault(reason, {"kind": "crash", "count": 0, "file": unit.group(1) if unit else "-"})
        entry["count"] = int(entry["count"]) + 1  # type: ignore[call-overload]
        print(f"=== [{self.name}] process ended: {reason} (see {self.artifacts / 'log.txt'})", file=sys.stderr, flush=True)

    def _stats(self) -> dict[str, object]:
        try:
            return json.loads((self.artifacts / "stats.json").read_text())
        except (OSError, ValueError):
            return {}

    def _collect(self) -> None:
        path = self.artifacts / "findings.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                item = json.loads(line)
                key = f"{item['kind']}: {item['signature']}"
                entry = self.findings.setdefault(key, {"kind": item["kind"], "count": 0, "file": item["file"]})
                entry["count"] = int(entry["count"]) + 1  # type: ignore[call-overload]
        # The per-signature counts of the last process (the file has one line per signature per process).
        stats = self._stats()
        for sig, info in stats.get("findings", {}).items():  # type: ignore[union-attr]
            key = sig.replace("|", ": ", 1)
            if key in self.findings:
                self.findings[key]["count"] = max(int(self.findings[key]["count"]), int(info["count"]))  # type: ignore[call-overload]
        for reason, entry in self.crashes.items():
            self.findings[f"crash: {reason}"] = entry

    def summary(self) -> dict[str, object]:
        corpus = len(list(self.corpus.iterdir())) if self.corpus.exists() else 0
        return {
            "target": self.name,
            "seconds": round(self.elapsed, 1),
            "execs": self.execs,
            "execs_per_second": round(self.execs / self.elapsed, 1) if self.elapsed else 0,
            "processes": self.processes,
            "corpus_files": corpus,
            "findings": self.findings,
            "worst_us_per_byte": {k: round(v * 1e6, 3) for k, v in self.worst.items()},
            "artifacts": str(self.artifacts),
        }


def _lower_priority() -> None:
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current < 10:
            os.setpriority(os.PRIO_PROCESS, 0, 10)
    except OSError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help=f"targets to run (default: all): {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=float, default=None, help="fuzzing time per target (default 600; 25 with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="short run of every target (CI)")
    parser.add_argument("--jobs", type=int, default=1, help="targets run at the same time (default 1)")
    parser.add_argument("--replay", action="append", metavar="FILE", default=[], help="run this input once through the one target given (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--libfuzzer", action="append", default=[], metavar="ARG", help="extra libFuzzer argument (repeatable)")
    args = parser.parse_args()
    if args.list:
        print("\n".join(TARGETS))
        return 0
    targets = args.targets or TARGETS
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)}")
    if args.replay and len(targets) != 1:
        parser.error("--replay needs exactly one target")
    seconds = args.seconds if args.seconds is not None else (25.0 if args.smoke else 600.0)
    fuzz_dir = Path(os.environ.get("VOLLEYIO_FUZZ_DIR", ROOT / ".fuzz")).resolve()
    runs = [TargetRun(t, seconds, fuzz_dir, args.libfuzzer, [str(Path(f).resolve()) for f in args.replay]) for t in targets]

    work: queue.Queue[TargetRun] = queue.Queue()
    for run in runs:
        work.put(run)

    def worker() -> None:
        while True:
            try:
                run = work.get_nowait()
            except queue.Empty:
                return
            print(f"== fuzz {run.name}: {'replay' if run.replay else f'{seconds:.0f} s'}", flush=True)
            run.run()
            print(f"== fuzz {run.name}: {run.execs} execs in {run.elapsed:.0f} s, {len(run.findings)} finding(s)", flush=True)

    threads = [threading.Thread(target=worker) for _ in range(max(1, args.jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    summaries = [run.summary() for run in runs]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (fuzz_dir / f"summary-{stamp}.json").write_text(json.dumps(summaries, indent=1))
    print()
    print(f"{'target':<17} {'seconds':>7} {'execs':>10} {'exec/s':>8} {'corpus':>6}  findings")
    total = 0
    for s in summaries:
        findings = s["findings"]
        assert isinstance(findings, dict)
        total += len(findings)
        print(f"{s['target']:<17} {s['seconds']:>7} {s['execs']:>10} {s['execs_per_second']:>8} {s['corpus_files']:>6}  {len(findings)}")
        for key, info in findings.items():
            path = Path(str(s["artifacts"])) / str(info["file"])
            print(f"    {key} (x{info['count']}; {path})")
    print(f"summary: {fuzz_dir / f'summary-{stamp}.json'}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
