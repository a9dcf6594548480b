"""A real nginx (Debian's /usr/sbin/nginx) in front of N volleyio processes, started by the
tests on a free loopback port with a generated configuration (``daemon off``, pid, logs and
temp files in a temporary directory) and stopped by them (by PID).

Round-robin by default (no ``ip_hash``, no cookie: every request may reach another
process); ``sticky=True`` adds ``ip_hash`` (the old requirement, for comparison).
HTTP/1.1 to the upstreams with keep-alive, and the ``Upgrade``/``Connection`` headers
passed on for WebSocket."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from _trio_support import free_port

NGINX = "/usr/sbin/nginx"


def nginx_available() -> bool:
    return Path(NGINX).exists()


def nginx_config(directory: Path, port: int, upstreams: list[int], sticky: bool = False) -> str:
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in upstreams)
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' '';
    }}
    upstream volleyio {{
        {"ip_hash;" if sticky else ""}
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://volleyio;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_request_buffering on;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
        }}
    }}
}}
"""


class NginxProcess:
    """nginx balancing ``upstreams`` (ports) on a free port of its own."""

    def __init__(self, directory: Path, upstreams: list[int], sticky: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        self.config = directory / "nginx.conf"
        self.config.write_text(nginx_config(directory, self.port, upstreams, sticky))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NginxProcess:
        self.process = subprocess.Popen(
            [NGINX, "-c", str(self.config), "-p", str(self.directory), "-e", str(self.directory / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"nginx exited: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("nginx did not listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
