"""The benchmarks' C load generator (benchmarks/engineio/eioload.c) checks what comes back.

A benchmark figure is only worth something if the server answered right: the generator
compares every echo with the message it sent, every ack with an id it has outstanding on
that connection and the event's arguments, every broadcast delivery with the trigger's
payload, and ends the run with exit status 3 ("CHECK FAILED") on the first wrong answer.
These tests run it against small volleyio servers that answer right, and against ones that
answer wrong in one way each, and require the check to pass and to fire respectively.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

import volleyio.trio as vt

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "benchmarks" / "engineio" / "eioload.c"
OPEN = '0{"sid":"t","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds the load generator")


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eioload") / "eioload"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(SOURCE)], check=True)
    return out


class SocketIOAnswers(vt.MessageHandler):
    """Answers ``42<id>["echo",x]`` with ``43<id>[x]`` and ``42["bcast",x]`` with
    ``42["tick",x]`` to the sender (one client), except for the fault it is told to make."""

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.answered = 0

    def on_open(self, ws: vt.WebSocketConnection) -> None:
        ws.send_nowait(OPEN)

    def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
        assert isinstance(message, str)
        if message == "40":
            ws.send_nowait('40{"sid":"s"}')
            return
        if message.startswith('42["bcast",'):
            arg = json.loads(message[2:])[1]
            ws.send_nowait("42" + json.dumps(["tick", arg + "x" if self.fault == "tick" else arg], separators=(",", ":")))
            return
        end = 2
        while message[end].isdigit():
            end += 1
        ack_id = int(message[2:end])
        arg = json.loads(message[end:])[1]
        self.answered += 1
        if self.fault == "id" and self.answered == 50:
            ack_id += 1000  # an id never sent
        if self.fault == "payload" and self.answered == 50:
            arg = arg[:-1] + "?"
        if self.fault == "duplicate" and self.answered == 50:
            ws.send_nowait(f"43{ack_id}" + json.dumps([arg]))  # the same ack twice
        ws.send_nowait(f"43{ack_id}" + json.dumps([arg]))


class EngineIOEcho(vt.MessageHandler):
    def __init__(self, fault: bool) -> None:
        self.fault = fault
        self.count = 0

    def on_open(self, ws: vt.WebSocketConnection) -> None:
        ws.send_nowait(OPEN)

    def on_message(self, ws: vt.WebSocketConnection, message: str | bytes) -> None:
        assert isinstance(message, str)
        self.count += 1
        ws.send_nowait(message + "!" if self.fault and self.count == 30 else message)


async def run_loadgen(loadgen: Path, handler: vt.MessageHandler, path: str, mode: str,
                      conns: int, inflight: int, total: int) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(vt.serve, {path: handler}, "127.0.0.1", 0)
            port = server.port
            done = await trio.run_process(
                [str(loadgen), mode, str(port), path, str(conns), str(inflight), "32", str(total), "20"],
                capture_stdout=True, capture_stderr=True, check=False)
            nursery.cancel_scope.cancel()
    return done


async def test_acks_answered_right_pass(loadgen: Path) -> None:
    done = await run_loadgen(loadgen, SocketIOAnswers("none"), "/socket.io/", "sio-ack", 4, 3, 400)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["messages"] == 400 and result["complete"] is True


@pytest.mark.parametrize("fault, words", [
    ("id", b"not outstanding"),
    ("duplicate", b"not outstanding"),
    ("payload", b"arguments differ"),
])
async def test_wrong_ack_fails_the_run(loadgen: Path, fault: str, words: bytes) -> None:
    done = await run_loadgen(loadgen, SocketIOAnswers(fault), "/socket.io/", "sio-ack", 4, 3, 400)
    assert done.returncode == 3
    assert b"CHECK FAILED" in done.stderr and words in done.stderr, done.stderr


async def test_broadcast_deliveries_checked(loadgen: Path) -> None:
    good = await run_loadgen(loadgen, SocketIOAnswers("none"), "/socket.io/", "sio-bcast", 1, 0, 20)
    assert good.returncode == 0, good.stderr
    bad = await run_loadgen(loadgen, SocketIOAnswers("tick"), "/socket.io/", "sio-bcast", 1, 0, 20)
    assert bad.returncode == 3 and b"CHECK FAILED: broadcast delivery" in bad.stderr, bad.stderr


async def test_engineio_echo_checked(loadgen: Path) -> None:
    good = await run_loadgen(loadgen, EngineIOEcho(False), "/engine.io/", "ws-echo", 3, 2, 300)
    assert good.returncode == 0, good.stderr
    bad = await run_loadgen(loadgen, EngineIOEcho(True), "/engine.io/", "ws-echo", 3, 2, 300)
    assert bad.returncode == 3 and b"CHECK FAILED: WebSocket echo differs" in bad.stderr, bad.stderr


def test_rounds_rotate_and_summarize_to_medians() -> None:
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks" / "engineio"))
    import benchlib

    names = ["a", "b", "c"]
    assert [benchlib.rotated(names, r)[0] for r in range(4)] == ["a", "b", "c", "a"]
    assert all(sorted(benchlib.rotated(names, r)) == names for r in range(3))
    runs = [{"msgs_per_s": 30.0, "complete": True}, {"msgs_per_s": 10.0, "complete": True},
            {"msgs_per_s": 20.0, "complete": False}, {"error": "boom"}]
    s = benchlib.summarize(runs)
    assert (s["msgs_per_s"], s["msgs_per_s_min"], s["msgs_per_s_max"], s["rounds"]) == (20.0, 10.0, 30.0, 3)
    assert s["complete"] is False and s["errors"] == ["boom"]
    assert benchlib.spread(s, "msgs_per_s", ".0f") == "20 (10..30) (capped) (1 round(s) failed)"
    assert benchlib.summarize([{"error": "x"}])["error"] == "x"
    results = {"ours": {"k": {"v": 10.0}}, "p1": {"k": {"v": 5.0}}, "p2": {"k": {"v": 20.0}}}
    table = benchlib.ratio_lines(results, "ours", {"peers": ["p1", "p2"]}, [("k", "v", "speed", True)])
    assert table[-1] == "| speed | 0.50× (p2) |"
    assert isinstance(benchlib.loadgen_error("m", 3, "CHECK FAILED: x"), benchlib.CheckFailed)
    assert not isinstance(benchlib.loadgen_error("m", 1, "connect: refused"), benchlib.CheckFailed)
