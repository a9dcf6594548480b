"""Micro-benchmarks of the speedups against peers, in one process.

    PYTHONPATH=src python benchmarks/micro.py [--json out.json] [--quick]

Prints a markdown table; writes the same numbers as JSON to ``--json`` (or to stdout
after the table with ``--json -``). Every number is the best of several repeats timed
with ``time.perf_counter_ns``; the whole run is bounded (well under 2 minutes).

What is measured:

* unmask throughput (GB/s, 1 GB = 1e9 B) per call size. "copy" = returns a new bytes
  object, "in place" = XORs a bytearray. Each peer is measured in the mode it offers.
* UTF-8 validation throughput (GB/s) vs CPython's ``bytes.decode('utf-8')``.
* frame encoding: ns per ``encode_frame`` / ``encode_message`` call of each twin (the
  send hot path; argument checks included).
* frame parsing: a stream of 32-byte-payload masked text frames (38 B on the wire) cut
  into 64 KiB chunks (frames straddle chunk boundaries), every payload delivered as
  ``str``. volleyio: ``parse_frames`` per chunk, carrying the unconsumed tail. picows:
  a server-side ``WSProtocol`` driven through its own ``get_buffer``/``buffer_updated``
  read path (the memcpy into its buffer stands in for the kernel's recv), with a
  listener calling ``frame.get_payload_as_utf8_text()``. aiohttp: its compiled
  ``WebSocketReader.feed_data`` with ``decode_text=True``, draining its queue.
  websockets: the sans-I/O ``ServerProtocol.receive_data`` + ``events_received`` and
  ``frame.data.decode()``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from volleyio import _speedups
from volleyio._speedups import _pure

try:
    from volleyio._speedups import _compiled
except ImportError:  # pragma: no cover
    _compiled = None

NS = time.perf_counter_ns
KEY = b"\x37\xfa\x21\x3d"
BUDGET_NS = 6_000_000  # target time of one repeat


def calibrate(fn: Callable[[int], None]) -> int:
    """fn(n) runs the operation n times; return an n that takes about BUDGET_NS."""
    n = 1
    while True:
        t0 = NS()
        fn(n)
        dt = NS() - t0
        if dt > BUDGET_NS // 4 or n >= 1 << 24:
            break
        n *= 4
    return max(1, int(n * BUDGET_NS / max(dt, 1)))


def interleaved_best(fns: dict[str, Callable[[int], None]], repeats: int) -> dict[str, float]:
    """Best ns per call of each fn. Repeats are interleaved across the candidates so
    that load from other processes on this shared machine hits all of them alike."""
    ns = {name: calibrate(fn) for name, fn in fns.items()}
    best = {name: float("inf") for name in fns}
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in fns.items():
                n = ns[name]
                t0 = NS()
                fn(n)
                best[name] = min(best[name], (NS() - t0) / n)
    finally:
        gc.enable()
    return best


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(mod: str) -> str:
    try:
        from importlib.metadata import version as v

        return v(mod)
    except Exception:  # noqa: BLE001
        return "n/a"


# ----------------------------------------------------------------------------- masking


def mask_candidates() -> dict[str, tuple[str, Callable[[bytes], Callable[[int], None]]]]:
    """name -> (mode, factory(data) -> loop(n))."""
    c: dict[str, tuple[str, Callable[[bytes], Callable[[int], None]]]] = {}
    if _compiled is not None:
        cm, cmi = _compiled.mask, _compiled.mask_inplace

        def vc_copy(data: bytes) -> Callable[[int], None]:
            def loop(n: int) -> None:
                for _ in range(n):
                    cm(data, KEY)

            return loop

        def vc_inplace(data: bytes) -> Callable[[int], None]:
            buf = bytearray(data)

            def loop(n: int) -> None:
                for _ in range(n):
                    cmi(buf, KEY)

            return loop

        c["volleyio compiled (copy)"] = ("copy", vc_copy)
        c["volleyio compiled (in place)"] = ("in place", vc_inplace)

    pm = _pure.mask

    def vp(data: bytes) -> Callable[[int], None]:
        def loop(n: int) -> None:
            for _ in range(n):
                pm(data, KEY)

        return loop

    c["volleyio pure (copy)"] = ("copy", vp)
    try:
        from websockets.speedups import apply_mask

        def ws(data: bytes) -> Callable[[int], None]:
            def loop(n: int) -> None:
                for _ in range(n):
                    apply_mask(data, KEY)

            return loop

        c["websockets speedups.apply_mask (copy)"] = ("copy", ws)
    except ImportError:
        pass
    try:
        from aiohttp._websocket.mask import _websocket_mask_cython as aio_mask

        def aio(data: bytes) -> Callable[[int], None]:
            buf = bytearray(data)

            def loop(n: int) -> None:
                for _ in range(n):
                    aio_mask(KEY, buf)

            return loop

        c["aiohttp _websocket_mask_cython (in place)"] = ("in place", aio)
    except ImportError:
        pass
    try:
        from wsproto.frame_protocol import XorMaskerSimple

        def wsp(data: bytes) -> Callable[[int], None]:
            buf = bytearray(data)

            def loop(n: int) -> None:
                for _ in range(n):
                    XorMaskerSimple(KEY).process(buf)

            return loop

        c["wsproto XorMaskerSimple (copy)"] = ("copy", wsp)
    except ImportError:
        pass
    return c


MASK_SIZES = [16, 125, 1024, 65536, 1 << 20]


def bench_mask(repeats: int) -> dict[str, dict[str, float | None]]:
    cands = mask_candidates()
    out: dict[str, dict[str, float | None]] = {name: {} for name in cands}
    for size in MASK_SIZES:
        data = os.urandom(size)
        best = interleaved_best({name: factory(data) for name, (_mode, factory) in cands.items()}, repeats)
        for name, ns in best.items():
            out[name][str(size)] = size / ns  # bytes per ns == GB/s
    out["picows"] = {str(s): None for s in MASK_SIZES}  # no Python-callable mask exported
    return out


# ----------------------------------------------------------------------------- UTF-8


def sample_texts() -> dict[str, bytes]:
    mixed_unit = "Grüße aus Köln, naïve café — 東京の天気は晴れです。 Привет мир! 😀🎉👍 ".encode()
    ascii_unit = b'{"event":"chat","text":"hello world, this is plain ASCII."} '
    texts = {}
    for label, unit in (("ascii", ascii_unit), ("mixed", mixed_unit)):
        for size in (1024, 65536):
            blob = (unit * (size // len(unit) + 2))[:size]
            # cut back to a character boundary so the text is valid
            while blob and (blob[-1] & 0xC0) == 0x80 or (blob and blob[-1] >= 0xC0):
                blob = blob[:-1]
            texts[f"{label} {size // 1024} KiB"] = blob
    return texts


def bench_utf8(repeats: int) -> dict[str, dict[str, float]]:
    impls: dict[str, Callable[[bytes], Callable[[int], None]]] = {}
    if _compiled is not None:
        cv = _compiled.validate_utf8

        def vc(data: bytes) -> Callable[[int], None]:
            assert cv(data) == -1

            def loop(n: int) -> None:
                for _ in range(n):
                    cv(data)

            return loop

        impls["volleyio compiled validate_utf8"] = vc

        def vinc(data: bytes) -> Callable[[int], None]:
            v = _compiled.Utf8Validator()

            def loop(n: int) -> None:
                feed = v.feed
                for _ in range(n):
                    feed(data)

            return loop

        impls["volleyio compiled Utf8Validator.feed"] = vinc
    pv = _pure.validate_utf8

    def vp(data: bytes) -> Callable[[int], None]:
        def loop(n: int) -> None:
            for _ in range(n):
                pv(data)

        return loop

    impls["volleyio pure validate_utf8"] = vp

    def dec(data: bytes) -> Callable[[int], None]:
        def loop(n: int) -> None:
            for _ in range(n):
                data.decode("utf-8")

        return loop

    impls["CPython bytes.decode('utf-8')"] = dec
    out: dict[str, dict[str, float]] = {name: {} for name in impls}
    for label, data in sample_texts().items():
        best = interleaved_best({name: factory(data) for name, factory in impls.items()}, repeats)
        for name, ns in best.items():
            out[name][label] = len(data) / ns
    return out


# ----------------------------------------------------------------------------- frame parsing

PAYLOAD = b'{"t":"msg","d":"hello, world!!"}'  # 32 bytes of ASCII text
assert len(PAYLOAD) == 32
CHUNK = 65536


def make_stream(nframes: int) -> tuple[list[bytes], int]:
    frames = []
    for i in range(nframes):
        key = bytes(((i * 7 + 1) & 0xFF, (i * 13 + 5) & 0xFF, 0x5A, (i * 3) & 0xFF))
        frames.append(_pure.encode_frame(1, PAYLOAD, mask_key=key))
    stream = b"".join(frames)
    chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]
    return chunks, nframes


def parse_volleyio(impl: Any, chunks: list[bytes], nframes: int) -> Callable[[], int]:
    parse = impl.parse_frames

    def run() -> int:
        count = 0
        tail = b""
        for chunk in chunks:
            buf = tail + chunk if tail else chunk
            frames, consumed, err = parse(buf, True, 1 << 20, 0, True)
            count += len(frames)
            tail = buf[consumed:]
        return count

    assert run() == nframes
    return run


def parse_picows(chunks: list[bytes], nframes: int) -> Callable[[], int] | str:
    try:
        import picows
        from picows.picows import WSProtocol
    except ImportError as exc:
        return f"not installed ({exc})"

    class Listener(picows.WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.texts: list[str] = []

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            self.texts.append(frame.get_payload_as_utf8_text())

    class FakeTransport(asyncio.Transport):
        def __init__(self, sock: socket.socket) -> None:
            super().__init__()
            self._sock = sock
            self.written: list[bytes] = []

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {"socket": self._sock, "peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(
                name, default
            )

        def write(self, data: Any) -> None:
            self.written.append(bytes(data))

        def writelines(self, lines: Any) -> None:
            for line in lines:
                self.write(line)

        def get_write_buffer_size(self) -> int:
            return 0

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

        def abort(self) -> None:
            pass

    listener = Listener()
    holder: dict[str, Any] = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # never connected; picows sets options on it

    async def setup() -> None:
        import logging

        proto = WSProtocol(
            None, None, False, lambda request: listener, logging.getLogger("bench.picows"),
            True, None, False, 10.0, 10.0, picows.WSAutoPingStrategy.PING_WHEN_IDLE, False,
            1 << 20, None, 1 << 20,
        )
        tr = FakeTransport(sock)
        proto.connection_made(tr)
        request = (
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        mv = proto.get_buffer(-1)
        mv[: len(request)] = request
        proto.buffer_updated(len(request))
        assert tr.written and tr.written[0].startswith(b"HTTP/1.1 101"), tr.written
        holder["proto"] = proto

    asyncio.run(setup())
    proto = holder["proto"]
    texts = listener.texts

    def run() -> int:
        texts.clear()
        get_buffer, buffer_updated = proto.get_buffer, proto.buffer_updated
        for chunk in chunks:
            n = len(chunk)
            mv = get_buffer(-1)
            mv[:n] = chunk
            buffer_updated(n)
        return len(texts)

    got = run()
    if got != nframes or texts[0] != PAYLOAD.decode():
        return f"picows harness delivered {got} of {nframes} frames"
    return run


def parse_aiohttp(chunks: list[bytes], nframes: int) -> Callable[[], int] | str:
    try:
        from aiohttp._websocket import reader_c
    except ImportError as exc:
        return f"compiled reader not available ({exc})"

    class Proto:
        _reading_paused = False

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

    loop = asyncio.new_event_loop()

    def run() -> int:
        # A fresh queue per run: its byte counter only ever grows while we drain it directly.
        queue = reader_c.WebSocketDataQueue(Proto(), 1 << 30, loop=loop)
        reader = reader_c.WebSocketReader(queue, 1 << 20, False, True)
        buffer = queue._buffer
        count = 0
        for chunk in chunks:
            reader.feed_data(chunk)
            count += len(buffer)
            buffer.clear()
        return count

    got = run()
    loop.close()
    if got != nframes:
        return f"aiohttp harness delivered {got} of {nframes} messages"
    return run


def parse_websockets(chunks: list[bytes], nframes: int) -> Callable[[], int] | str:
    try:
        from websockets.frames import Opcode
        from websockets.protocol import State
        from websockets.server import ServerProtocol
    except ImportError as exc:
        return f"not available ({exc})"
    holder: dict[str, Any] = {}

    def fresh() -> Any:
        return ServerProtocol(state=State.OPEN, max_size=1 << 20)

    holder["p"] = fresh()
    text = Opcode.TEXT

    def run() -> int:
        p = holder["p"] = fresh()
        count = 0
        for chunk in chunks:
            p.receive_data(chunk)
            for ev in p.events_received():
                if ev.opcode is text:
                    ev.data.decode()
                count += 1
        return count

    got = run()
    if got != nframes:
        return f"websockets harness delivered {got} of {nframes} frames"
    return run


def bench_parse(repeats: int, nframes: int) -> dict[str, dict[str, Any]]:
    chunks, n = make_stream(nframes)
    total_bytes = sum(map(len, chunks))
    cands: dict[str, Callable[[], int] | str] = {}
    if _compiled is not None:
        cands["volleyio compiled parse_frames"] = parse_volleyio(_compiled, chunks, n)
    cands["volleyio pure parse_frames"] = parse_volleyio(_pure, chunks, n)
    cands["picows WSProtocol (get_payload_as_utf8_text)"] = parse_picows(chunks, n)
    cands["aiohttp reader_c.WebSocketReader (decode_text)"] = parse_aiohttp(chunks, n)
    cands["websockets ServerProtocol + .decode()"] = parse_websockets(chunks, n)
    out: dict[str, dict[str, Any]] = {}
    runnable = {}
    for name, run in cands.items():
        if isinstance(run, str):
            out[name] = {"frames_per_s": None, "MB_per_s": None, "note": run}
        else:
            runnable[name] = run
    best = {name: float("inf") for name in runnable}
    gc.disable()
    try:
        for r in range(repeats):
            for name, run in runnable.items():
                if r >= 3 and ("pure" in name or "websockets" in name):
                    continue  # slow ones: 3 repeats are plenty
                t0 = NS()
                run()
                best[name] = min(best[name], NS() - t0)
    finally:
        gc.enable()
    for name in runnable:
        t = best[name]
        out[name] = {"frames_per_s": n / t * 1e9, "MB_per_s": total_bytes / t * 1e3, "note": ""}
    return {name: out[name] for name in cands}


# ----------------------------------------------------------------------------- encode

ENCODE_CASES: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {
    "encode_frame(1, 32 B)": ("encode_frame", (1, b"x" * 32), {}),
    "encode_frame(2, 32 B, mask_key)": ("encode_frame", (2, b"x" * 32), {"mask_key": KEY}),
    "encode_frame(0, 32 B, fin=False, rsv=4)": ("encode_frame", (0, b"x" * 32, False, 4), {}),
    "encode_frame(2, 64 KiB)": ("encode_frame", (2, b"x" * 65536), {}),
    "encode_message(32-char str)": ("encode_message", ("x" * 32,), {}),
    "encode_message(32 B)": ("encode_message", (b"x" * 32,), {}),
}


def bench_encode(repeats: int) -> dict[str, dict[str, float]]:
    """ns per call, per case and twin."""
    impls = {"pure": _pure}
    if _compiled is not None:
        impls = {"compiled": _compiled, "pure": _pure}
    out: dict[str, dict[str, float]] = {}
    for label, (func_name, args, kwargs) in ENCODE_CASES.items():
        fns: dict[str, Callable[[int], None]] = {}
        for impl_name, module in impls.items():
            func = getattr(module, func_name)

            def loop(n: int, func: Callable[..., bytes] = func) -> None:
                for _ in range(n):
                    func(*args, **kwargs)

            fns[impl_name] = loop
        out[label] = interleaved_best(fns, repeats)
    return out


# ----------------------------------------------------------------------------- report


def fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write results as JSON to this path ('-' = stdout)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args()
    repeats = 3 if args.quick else 21
    t_start = NS()

    env = {
        "python": sys.version.split()[0],
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "volleyio_impl": _speedups.IMPLEMENTATION,
        "volleyio_simd": _compiled._simd_info() if _compiled is not None else None,
        "peers": {m: version(m) for m in ("websockets", "aiohttp", "picows", "wsproto", "Cython")},
    }
    mask = bench_mask(repeats)
    utf8 = bench_utf8(repeats)
    encode = bench_encode(repeats)
    parse = bench_parse(repeats, nframes=100_000)
    results = {"env": env, "mask_GBps": mask, "utf8_GBps": utf8, "encode_ns": encode, "parse": parse}

    lines = []
    lines.append(f"CPU: {env['cpu']} ({env['cores']} cores), Python {env['python']}, "
                 f"volleyio kernels: {env['volleyio_simd']}")
    lines.append("Peers: " + ", ".join(f"{k} {v}" for k, v in env["peers"].items()))
    lines.append("")
    lines.append("### Unmask, GB/s (higher is better)")
    lines.append("")
    lines.append("| implementation | " + " | ".join(_size_label(s) for s in MASK_SIZES) + " |")
    lines.append("|---|" + "---:|" * len(MASK_SIZES))
    for name, row in mask.items():
        label = name if name != "picows" else "picows (no Python-callable mask)"
        lines.append(f"| {label} | " + " | ".join(fmt(row[str(s)]) for s in MASK_SIZES) + " |")
    lines.append("")
    lines.append("### UTF-8 validation, GB/s")
    lines.append("")
    labels = list(next(iter(utf8.values())).keys())
    lines.append("| implementation | " + " | ".join(labels) + " |")
    lines.append("|---|" + "---:|" * len(labels))
    for name, row in utf8.items():
        lines.append(f"| {name} | " + " | ".join(fmt(row[lab]) for lab in labels) + " |")
    lines.append("")
    lines.append("### Encode, ns per call (lower is better)")
    lines.append("")
    impl_names = list(next(iter(encode.values())).keys())
    lines.append("| call | " + " | ".join(impl_names) + " |")
    lines.append("|---|" + "---:|" * len(impl_names))
    for label, row in encode.items():
        lines.append(f"| {label} | " + " | ".join(fmt(row[name], 0) for name in impl_names) + " |")
    lines.append("")
    lines.append("### Parse 32-byte masked text frames from 64 KiB chunks to str")
    lines.append("")
    lines.append("| implementation | Mframes/s | MB/s | note |")
    lines.append("|---|---:|---:|---|")
    for name, row in parse.items():
        fps = row["frames_per_s"]
        lines.append(f"| {name} | {fmt(None if fps is None else fps / 1e6)} | {fmt(row['MB_per_s'], 0)} | {row['note']} |")
    lines.append("")
    lines.append(f"(total benchmark time {(NS() - t_start) / 1e9:.1f} s)")
    print("\n".join(lines))
    if args.json == "-":
        print(json.dumps(results, indent=2))
    elif args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def _size_label(size: int) -> str:
    if size >= 1 << 20:
        return f"{size >> 20} MiB"
    if size >= 1024:
        return f"{size >> 10} KiB"
    return f"{size} B"


if __name__ == "__main__":
    main()
