"""The cost of connection state recovery bookkeeping on the broadcast path, in process.

    python benchmarks/socketio/recovery_micro.py [--clients 1000] [--broadcasts 2000] [--rounds 5]

Drives the sans-I/O Socket.IO core (``volleyio.socketio.SocketIOServer``) with a transport
that only counts, ``clients`` sockets in one room, and times ``broadcasts`` room
broadcasts with recovery off and on, interleaved over ``rounds`` rounds (the best round
of each is printed, which filters out other load on the machine). With recovery on, each
broadcast gets its offset appended and one entry in the bounded in-memory store. Also
times broadcasts to a single socket (where the fixed per-broadcast cost shows most).
Measures and prints only; nothing asserts.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from volleyio.engineio import PreparedPacket
from volleyio.socketio import RecoveryConfig, SocketIOConfig, SocketIOServer


class CountingTransport:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, sid: str, data: Any, *, volatile: bool = False) -> bool:
        self.sent += 1
        return True

    def close(self, sid: str, now: float) -> None:
        pass


def build(clients: int, recovery: bool) -> SocketIOServer:
    core = SocketIOServer(
        CountingTransport(), SocketIOConfig(recovery=RecoveryConfig() if recovery else None), prepare=PreparedPacket
    )
    for i in range(clients):
        eio = f"e{i}"
        core.engineio_connected(eio, 0.0)
        core.engineio_message(eio, "0", 0.0)
    for event in core.take_events():
        core.join(getattr(event, "sid"), "room")
    return core


def run(core: SocketIOServer, broadcasts: int) -> float:
    started = time.perf_counter()
    for i in range(broadcasts):
        core.broadcast("/", "tick", {"n": i, "text": "hello"}, rooms=("room",))
    return (time.perf_counter() - started) / broadcasts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--broadcasts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("| room size | broadcasts | recovery off µs/broadcast | recovery on µs/broadcast | on/off |")
    print("|---|---|---|---|---|")
    for clients, broadcasts in ((args.clients, args.broadcasts), (1, args.broadcasts * 50)):
        cores = {False: build(clients, False), True: build(clients, True)}
        best = {False: float("inf"), True: float("inf")}
        for _ in range(args.rounds):
            for recovery in (False, True):
                best[recovery] = min(best[recovery], run(cores[recovery], broadcasts))
        off, on = best[False] * 1e6, best[True] * 1e6
        print(f"| {clients:,} | {broadcasts:,} | {off:.2f} | {on:.2f} | {on / off:.3f} |")


if __name__ == "__main__":
    main()
