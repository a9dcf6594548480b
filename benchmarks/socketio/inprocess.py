"""CPU per Socket.IO event + ack inside one process, for before/after comparisons of the
hot path (less sensitive to a loaded machine than the multi-process benchmarks):

    python benchmarks/socketio/inprocess.py LABEL            # this checkout
    PYTHONPATH=/path/to/other/src python benchmarks/socketio/inprocess.py LABEL   # another

(1) sans-I/O: the Engine.IO and Socket.IO cores on one WebSocket session: receive
    '421["echo","x"]', route the event, ack it, take the outgoing frame (50,000 times,
    best of 7). (2) trio: SocketIOServer on loopback and a raw WebSocket client in the same
    process doing sequential acks (5,000, best of 5); includes the client's own cost.
Prints one JSON line (microseconds of process CPU time). Measures only; nothing asserts."""
import json, sys, time
import volleyio
from volleyio.engineio.server import EngineIOServer, HttpRequest
from volleyio.socketio.server import SocketIOServer as Core, SocketIOConfig, NamespaceConfig, EventReceived

def sansio(n):
    eio = EngineIOServer()
    core = Core(eio, SocketIOConfig(namespaces={"/": NamespaceConfig()}))
    out = eio.handle_request(HttpRequest("GET", "/socket.io/", {"EIO": "4", "transport": "websocket"}, {}, websocket_upgrade=True), 0.0)
    ch, sid = out.channel, out.sid
    core.engineio_connected(sid, 0.0); eio.take_events()
    ch.receive("40", 0.0)
    for ev in eio.take_events():
        core.engineio_message(ev.sid, ev.data, 0.0)
    core.take_events(); ch.take_outgoing()
    take_e, take_c, recv, ack, take_o = eio.take_events, core.take_events, ch.receive, core.ack, ch.take_outgoing
    handle = core.engineio_message
    t0 = time.process_time()
    for i in range(n):
        recv('421["echo","x"]', 0.0)
        for ev in take_e():
            handle(ev.sid, ev.data, 0.0)
        for ev in take_c():
            ack(ev.sid, ev.ack_id, *ev.args)
        take_o()
    return (time.process_time() - t0) / n * 1e6

def trio_roundtrips(n):
    import trio, volleyio.trio as vt
    sio = vt.SocketIOServer()
    @sio.on("echo")
    async def echo(socket, *args):
        return args
    result = {}
    async def main():
        async with trio.open_nursery() as nursery:
            server = await nursery.start(sio.serve, "127.0.0.1", 0)
            async with vt.connect(f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket") as ws:
                await ws.receive(); await ws.send("40"); await ws.receive()
                for i in range(200):
                    await ws.send('421["echo","x"]'); await ws.receive()
                t0 = time.process_time()
                for i in range(n):
                    await ws.send('421["echo","x"]')
                    await ws.receive()
                result["us"] = (time.process_time() - t0) / n * 1e6
            nursery.cancel_scope.cancel()
    trio.run(main)
    return result["us"]

which = sys.argv[1] if len(sys.argv) > 1 else "this checkout"
a = min(sansio(50_000) for _ in range(7))
b = min(trio_roundtrips(5_000) for _ in range(5))
print(json.dumps({"which": which, "volleyio": volleyio.__file__, "sansio_us_per_event": round(a, 3), "trio_us_per_roundtrip": round(b, 2)}))
