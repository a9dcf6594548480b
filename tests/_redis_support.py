"""Real redis-server processes for the cluster tests: one per test session (standalone),
one per test when a test restarts it, and a 3-master Redis Cluster.

Started on free loopback ports with no persistence (``--save '' --appendonly no``) in a
temporary directory; stopped by the fixtures that started them (by PID)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _trio_support import free_port, require_peer

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_available() -> bool:
    return Path(REDIS_SERVER).exists() and Path(REDIS_CLI).exists()


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"redis-server did not listen on {port}")


class RedisProcess:
    """One redis-server; ``stop()``/``start()`` restart it on the same port."""

    def __init__(self, directory: Path, port: int | None = None, *extra: str) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def cli(self, *args: str) -> str:
        out = subprocess.run([REDIS_CLI, "-p", str(self.port), *args], capture_output=True, text=True, timeout=30)
        return out.stdout


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    require_peer(redis_available(), "redis-server (Debian package redis-server)")
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server for one test (that may stop and restart it)."""
    require_peer(redis_available(), "redis-server (Debian package redis-server)")
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisProcess]]:
    """Three masters, no replicas, slots spread by ``redis-cli --cluster create``."""
    require_peer(redis_available(), "redis-server (Debian package redis-server)")
    base = tmp_path_factory.mktemp("redis-cluster")
    nodes = []
    try:
        for index in range(3):
            directory = base / str(index)
            node = RedisProcess(directory, cluster_port(), "--cluster-enabled", "yes", "--cluster-config-file",
                                str(directory / "nodes.conf"), "--cluster-node-timeout", "5000")
            node.start()
            nodes.append(node)
        out = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in nodes), "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        deadline = time.monotonic() + 20
        while "cluster_state:ok" not in nodes[0].cli("cluster", "info"):
            assert time.monotonic() < deadline, nodes[0].cli("cluster", "info")
            time.sleep(0.1)
        yield nodes
    finally:
        for node in nodes:
            node.stop()
