"""An Engine.IO echo server that is one node of a cluster with forwarding on (the machinery
of ``SocketIOServer(cluster_polling=True)``), for benchmarks/cluster/polling.py.

    python polling_server.py PORT REDIS_URL

Prints "ready" once it listens and is subscribed to its Redis channel."""

from __future__ import annotations

import sys

import trio

import volleyio.trio as vt
from volleyio.engineio import ServerConfig
from volleyio.engineio.forwarding import new_node_id, sid_prefix
from volleyio.trio._cluster_polling import ClusterForwarder


async def echo(session: vt.EngineIOSession) -> None:
    async for message in session:
        await session.send(message)


async def main() -> None:
    port, url = int(sys.argv[1]), sys.argv[2]
    import coredis

    node = new_node_id()
    app = vt.EngineIOApp(echo, config=ServerConfig(sid_prefix=sid_prefix(node)))
    app.forwarder = ClusterForwarder(app, lambda: coredis.Redis.from_url(url), node)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: vt.serve(None, "127.0.0.1", port, mounts={"/engine.io/": app},
                                                         task_status=task_status))
        await app.forwarder.started.wait()
        print("ready", flush=True)


if __name__ == "__main__":
    trio.run(main)
