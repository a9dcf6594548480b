"""Shared plumbing of the atheris targets in this directory (run them with ``scripts/fuzz``).

Each target module defines ``check(data: bytes) -> None`` (one fuzz input) and, for the
super-linear time detector, ``linear(data: bytes) -> None`` (decode ``data``, whatever
its length; the peer's errors are swallowed), then calls :func:`main`.

A *finding* is recorded (input saved, deduplicated by signature) and the run goes on:

``exception``
    an exception outside ``volleyio.VolleyError``'s hierarchy escaped the code under
    test (targets catch the ``VolleyError`` subclasses the API documents);
``twin``
    the compiled and pure-Python speedups disagree (result, exception type or message);
``invariant``
    a target-specific rule broke (split invariance, round trips, close codes, ...);
``slow``
    one input took longer than the per-byte budget (CPU time; re-checked: minimum of 3
    runs);
``superlinear``
    an input shaped ``prefix + a*k + b*k + suffix`` grew 8x and its time grew more than
    24x (or past the per-byte budget), and growing it 4x once more cost more than 8x (and over 0.5 s)
    (linear: 4x, quadratic: 16x; minimum of 2 runs each, the machine is shared).

Native crashes and sanitizer reports end the process; ``fuzz/run.py`` records those.
Files written to ``$VOLLEYIO_FUZZ_ARTIFACTS`` (default ``.fuzz/artifacts/<target>``):
``finding-<hash>`` (the fuzz input, replayable: ``scripts/fuzz --replay FILE target``),
``finding-<hash>.txt`` (what and where), ``findings.jsonl`` and ``stats.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
import zlib
from collections.abc import Callable
from typing import Any

import atheris

# The per-byte budget: generous, because while fuzzing atheris traces every comparison
# of the instrumented pure-Python code and the process runs under ASan on a loaded
# machine (a linear decoder measures 10-300 us/byte here). The growth rule below is
# the sharper test.
TIME_FLOOR = float(os.environ.get("VOLLEYIO_FUZZ_TIME_FLOOR", "0.25"))  # seconds
TIME_PER_BYTE = float(os.environ.get("VOLLEYIO_FUZZ_TIME_PER_BYTE", "1e-3"))  # seconds per byte
# Super-linear detector: about one input in AMPLIFY_EVERY (chosen by a hash of the
# input, so libFuzzer cannot steer towards the slow path, and a saved finding replays
# the same way) is grown to about AMPLIFY_SMALL bytes and to 8x that.
AMPLIFY_EVERY = int(os.environ.get("VOLLEYIO_FUZZ_AMPLIFY_EVERY", "48"))
AMPLIFY_SMALL = int(os.environ.get("VOLLEYIO_FUZZ_AMPLIFY_SMALL", "512"))
# At most this share of the run's time goes to the (costly) amplified inputs.
AMPLIFY_SHARE = 0.25
AMPLIFY_FACTOR = 8
# Linear time grows ~8x over 8x the input; quadratic ~64x: above 24x is a candidate,
# confirmed when 4x the input once more costs more than 8x (linear 4x, quadratic 16x).
GROWTH_LIMIT = 24.0
CONFIRM_FACTOR = 4
CONFIRM_LIMIT = 8.0
CONFIRM_FLOOR = 0.5  # seconds at the confirming size: smaller times are too noisy here
GROWTH_FLOOR = 0.05  # seconds: below this, growth is noise



class Finding(Exception):
    """Raised by a target's checks: ``kind`` and a stable ``signature`` for dedup."""

    def __init__(self, kind: str, signature: str, detail: str = "", expanded: bytes | None = None) -> None:
        super().__init__(f"{kind}: {signature}")
        self.kind = kind
        self.signature = signature
        self.detail = detail
        self.expanded = expanded


class _State:
    target = "?"
    artifacts = ""
    execs = 0
    amplified = 0
    amplify_time = 0.0
    started = 0.0
    last_stats = 0.0
    findings: dict[str, dict[str, Any]] = {}
    worst_per_byte: dict[str, float] = {}
    superlinear_done: set[str] = set()
    replay = False


S = _State()


def _write_stats() -> None:
    S.last_stats = time.monotonic()
    stats = {
        "target": S.target,
        "execs": S.execs,
        "amplified_checks": S.amplified,
        "seconds": round(time.monotonic() - S.started, 1),
        "findings": {sig: {"kind": f["kind"], "count": f["count"], "file": f["file"]} for sig, f in S.findings.items()},
        "worst_seconds_per_byte": S.worst_per_byte,
    }
    tmp = os.path.join(S.artifacts, "stats.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(stats, fh, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(S.artifacts, "stats.json"))


def record(kind: str, signature: str, detail: str, data: bytes, extra: bytes | None = None) -> None:
    """Record a finding (first input per signature kept) and go on fuzzing."""
    key = f"{kind}|{signature}"
    known = S.findings.get(key)
    if known is not None:
        known["count"] += 1
        return
    digest = hashlib.sha1(key.encode("utf-8", "replace")).hexdigest()[:12]
    name = f"finding-{digest}"
    with open(os.path.join(S.artifacts, name), "wb") as fh:
        fh.write(data)
    if extra is not None:
        with open(os.path.join(S.artifacts, name + ".expanded"), "wb") as fh:
            fh.write(extra)
    with open(os.path.join(S.artifacts, name + ".txt"), "w") as fh:
        fh.write(f"target: {S.target}\nkind: {kind}\nsignature: {signature}\ninput: {data[:200]!r}"
                 f"{' ...' if len(data) > 200 else ''} ({len(data)} bytes)\n\n{detail}\n")
    S.findings[key] = {"kind": kind, "count": 1, "file": name}
    with open(os.path.join(S.artifacts, "findings.jsonl"), "a") as fh:
        fh.write(json.dumps({"target": S.target, "kind": kind, "signature": signature, "file": name}) + "\n")
    print(f"\n=== FINDING [{S.target}] {kind}: {signature}\n{detail[:2000]}\n", file=sys.stderr, flush=True)
    _write_stats()


def exception_signature(exc: BaseException) -> str:
    """Type plus the innermost volleyio frame (else the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = "?"
    for frame in reversed(frames):
        if "volleyio" in frame.filename.replace("\\", "/"):
            where = f"{frame.filename.rsplit('volleyio', 1)[-1]}:{frame.lineno}"
            break
    else:
        if frames:
            where = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}"
    return f"{type(exc).__module__}.{type(exc).__qualname__} at {where}"


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """("ok", result) or ("raise", exception type, message): what twins must agree on."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - every exception is compared
        return ("raise", type(exc), str(exc))


def short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def describe(result: tuple[Any, ...]) -> str:
    if result[0] == "ok":
        return f"returned {type(result[1]).__name__}"
    return f"raised {result[1].__name__}"


def compare_twins(name: str, pure: tuple[Any, ...], comp: tuple[Any, ...], call: str) -> None:
    """Raise a ``twin`` Finding unless both outcomes are equal (same types too)."""
    same = pure[0] == comp[0]
    if same and pure[0] == "ok":
        same = type(pure[1]) is type(comp[1]) and pure[1] == comp[1]
    elif same:
        same = pure[1] is comp[1] and pure[2] == comp[2]
    if not same:
        what = f"pure {describe(pure)}, compiled {describe(comp)}"
        if pure[0] == comp[0] == "raise" and pure[1] is comp[1]:
            what = f"both raised {pure[1].__name__}, messages differ"
        elif pure[0] == comp[0] == "ok" and type(pure[1]) is type(comp[1]):
            what = "different results"
        raise Finding("twin", f"{name}: {what}", f"call: {call}\npure:     {short(pure)}\ncompiled: {short(comp)}")


def _timed(fn: Callable[[bytes], None], data: bytes) -> float:
    """CPU seconds of ``fn(data)``: wall time on a shared 2-core machine is mostly
    the other processes' (a preempted run looks 5x slower), CPU time is ours."""
    start = time.process_time()
    fn(data)
    return time.process_time() - start


def budget(length: int) -> float:
    return TIME_FLOOR + TIME_PER_BYTE * length


def _note_rate(label: str, seconds: float, length: int) -> None:
    if length >= 1024:
        rate = seconds / length
        if rate > S.worst_per_byte.get(label, 0.0):
            S.worst_per_byte[label] = rate


def _piece(fdp: atheris.FuzzedDataProvider, tokens: list[bytes], limit: int) -> bytes:
    """Raw bytes of the input, or 1-3 of the target's tokens (its grammar's building blocks)."""
    if tokens and fdp.ConsumeBool():
        return b"".join(fdp.PickValueInList(tokens) for _ in range(fdp.ConsumeIntInRange(1, 3)))
    return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, limit))


def _amplify(linear: Callable[[bytes], None], rest: bytes, tokens: list[bytes], prefixes: list[bytes]) -> None:
    fdp = atheris.FuzzedDataProvider(rest)
    prefix = fdp.PickValueInList(prefixes) if prefixes and fdp.ConsumeBool() else _piece(fdp, tokens, 48)
    unit_a = _piece(fdp, tokens, 48)
    unit_b = _piece(fdp, tokens, 48)
    suffix = _piece(fdp, tokens, 64)
    unit = len(unit_a) + len(unit_b)
    if unit == 0:
        return
    S.amplified += 1
    k_small = max(1, AMPLIFY_SMALL // unit)
    k_large = k_small * AMPLIFY_FACTOR
    small = prefix + unit_a * k_small + unit_b * k_small + suffix
    large = prefix + unit_a * k_large + unit_b * k_large + suffix
    t_small = _timed(linear, small)
    t_large = _timed(linear, large)
    _note_rate("amplified", t_large, len(large))
    if t_large <= budget(len(large)) and not (t_large > GROWTH_FLOOR and t_large > GROWTH_LIMIT * t_small):
        return
    # Confirm (the machine is shared, and a limit such as "more than 1,000 brackets"
    # can switch a check on between the two sizes): grow the large input 4x once more,
    # minimum of 2 runs of each. Linear time grows 4x; quadratic 16x.
    k_huge = CONFIRM_FACTOR * k_large
    huge = prefix + unit_a * k_huge + unit_b * k_huge + suffix
    if t_large < 10.0:  # one run is enough for an input that slow
        t_large = min(t_large, _timed(linear, large))
    t_huge = _timed(linear, huge)
    if t_large < 10.0 and t_huge > CONFIRM_FLOOR and t_huge / max(t_large, 1e-9) > CONFIRM_LIMIT:
        t_huge = min(t_huge, _timed(linear, huge))
    growth = t_huge / max(t_large, 1e-9)
    shape = (f"prefix={prefix!r:.80} a={unit_a!r:.80} b={unit_b!r:.80} suffix={suffix!r:.80}\n"
             f"{len(small)} bytes: {t_small:.4f} s; {len(large)} bytes: {t_large:.4f} s "
             f"({t_large / len(large) * 1e6:.2f} us/byte); {len(huge)} bytes: {t_huge:.4f} s "
             f"({t_huge / len(huge) * 1e6:.2f} us/byte); x{growth:.2f} for {CONFIRM_FACTOR}x the input; "
             f"budget {budget(len(huge)):.3f} s")
    if t_huge > CONFIRM_FLOOR and growth > CONFIRM_LIMIT:
        raise Finding("superlinear", S.target, shape, huge)
    if t_huge > budget(len(huge)):
        raise Finding("slow", f"{S.target} (amplified)", shape, huge)


def main(
    target: str,
    check: Callable[[bytes], None],
    linear: Callable[[bytes], None] | None = None,
    tokens: list[bytes] | None = None,
    prefixes: list[bytes] | None = None,
) -> None:
    """Run ``check`` under atheris/libFuzzer with the finding rules above.

    ``tokens`` / ``prefixes``: building blocks of the target's grammar that the
    super-linear detector may repeat (besides raw bytes of the input).
    """
    S.target = target
    S.artifacts = os.environ.get("VOLLEYIO_FUZZ_ARTIFACTS") or os.path.join(".fuzz", "artifacts", target)
    os.makedirs(S.artifacts, exist_ok=True)
    S.started = time.monotonic()
    S.replay = any(arg.startswith("-runs=") for arg in sys.argv[1:])

    def one_input(data: bytes) -> None:
        S.execs += 1
        try:
            if linear is not None and AMPLIFY_EVERY > 0 and zlib.crc32(data) % AMPLIFY_EVERY == 0:
                elapsed = time.monotonic() - S.started
                if target not in S.superlinear_done and (S.amplify_time <= AMPLIFY_SHARE * elapsed + 5.0 or S.replay):
                    start = time.monotonic()
                    try:
                        _amplify(linear, data, tokens or [], prefixes or [])
                    except Finding:
                        S.superlinear_done.add(target)  # one is enough; keep the exec rate
                        raise
                    finally:
                        S.amplify_time += time.monotonic() - start
                    return
            elapsed = _timed(check, data)
            _note_rate("input", elapsed, len(data))
            if elapsed > budget(len(data)):
                elapsed = min(elapsed, *(_timed(check, data) for _ in range(2)))
                if elapsed > budget(len(data)):
                    raise Finding(
                        "slow", target,
                        f"{len(data)} bytes took {elapsed:.3f} s (min of 3); budget {budget(len(data)):.3f} s",
                    )
        except Finding as finding:
            record(finding.kind, finding.signature, finding.detail, data, finding.expanded)
        except Exception as exc:  # noqa: BLE001 - anything else escaping is a finding
            record("exception", exception_signature(exc), "".join(traceback.format_exception(exc)), data)
        if time.monotonic() - S.last_stats > 2.0:
            _write_stats()

    argv = list(sys.argv)
    _write_stats()
    atheris.Setup(argv, one_input)
    try:
        atheris.Fuzz()
    finally:
        _write_stats()
