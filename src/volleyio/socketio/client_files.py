"""The browser client, served as Node's ``socket.io`` serves it (sans-I/O).

``<script src="/socket.io/socket.io.js"></script>`` works on a volleyio server as it does
on Node's: :class:`ClientFiles` answers ``GET``/``HEAD`` of the socket.io-client bundles
shipped in ``volleyio/socketio/client_dist/`` (the release named in its ``VERSION``
file, with the client's ``LICENSE``):

* ``socket.io.js``, ``socket.io.min.js``, ``socket.io.esm.min.js`` (``application/
  javascript; charset=utf-8``) and their source maps ``<name>.map`` (``application/
  json; charset=utf-8``);
* ``ETag: "<client version>"`` (Node's tag) and ``Cache-Control: public, max-age=0``
  (the browser revalidates, and an ``If-None-Match`` naming the tag, weak or strong, or
  ``*``, gets ``304 Not Modified`` without a body);
* ``Content-Encoding: gzip`` when the request's ``Accept-Encoding`` allows it (each
  file compressed once, on first use), ``Vary: Accept-Encoding`` always.

Like the Engine.IO core it does no I/O of its own beyond reading the package's files
(once, on first use) and takes parsed requests: :meth:`ClientFiles.respond` returns an
:class:`~volleyio.engineio.HttpResponse`, or ``None`` when the request is not for a
client file (the Engine.IO endpoint handles it then). The msgpack bundle of the npm
package is not shipped: volleyio speaks the default (JSON) parser only.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from importlib import resources

from ..engineio.server import HttpRequest, HttpResponse

__all__ = ["CLIENT_FILE_NAMES", "ClientFiles", "client_version", "read_client_file"]

#: The files served under the Socket.IO path (each also with ``.map``).
CLIENT_FILE_NAMES: tuple[str, ...] = ("socket.io.js", "socket.io.min.js", "socket.io.esm.min.js")
_SERVED = frozenset(CLIENT_FILE_NAMES + tuple(name + ".map" for name in CLIENT_FILE_NAMES))
_PACKAGE = "volleyio.socketio.client_dist"


def read_client_file(name: str) -> bytes:
    """The bytes of one shipped client file (``VERSION`` and ``LICENSE`` included)."""
    return resources.files(_PACKAGE).joinpath(name).read_bytes()


def client_version() -> str:
    """The socket.io-client release the shipped files come from (e.g. ``"4.8.4"``)."""
    return read_client_file("VERSION").decode("ascii").strip()


def _tokens(value: str) -> list[str]:
    return [token.strip() for token in value.split(",") if token.strip()]


def _accepts_gzip(headers: Mapping[str, str]) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (RFC 9110 12.5.3: ``gzip`` or ``*``
    with a non-zero q; an explicit ``gzip;q=0`` wins over ``*``)."""
    value = headers.get("accept-encoding")
    if not value:
        return False
    star: bool | None = None
    for token in _tokens(value):
        coding, _, params = token.partition(";")
        coding = coding.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(number)
                except ValueError:
                    quality = 0.0
        if coding in ("gzip", "x-gzip"):
            return quality > 0
        if coding == "*":
            star = quality > 0
    return bool(star)


class ClientFiles:
    """Answers requests for the browser client under ``path`` (e.g. ``/socket.io/``).

    ``cors_headers(request)`` may add CORS headers (the Engine.IO endpoint's), as Node
    runs its CORS middleware before serving the files.
    """

    def __init__(self, path: str) -> None:
        self.path = path if path.endswith("/") else path + "/"
        self._version: str | None = None
        self._files: dict[str, bytes] = {}
        self._gzipped: dict[str, bytes] = {}

    @property
    def etag(self) -> str:
        if self._version is None:
            self._version = client_version()
        return f'"{self._version}"'

    def wants(self, path: str) -> bool:
        """Whether ``path`` names a client file."""
        return path.startswith(self.path) and path[len(self.path):] in _SERVED

    def respond(
        self, request: HttpRequest, extra_headers: tuple[tuple[str, str], ...] = ()
    ) -> HttpResponse | None:
        """The response for a client-file request, or ``None`` if it is not one.

        Only ``GET`` and ``HEAD`` are answered (a ``HEAD`` gets the ``GET`` headers; the
        I/O layer omits the body). Other methods on these paths get 405.
        """
        if request.websocket_upgrade or not self.wants(request.path):
            return None
        name = request.path[len(self.path):]
        if request.method not in ("GET", "HEAD"):
            refusal = (("Allow", "GET, HEAD"), ("Content-Length", "0"), ("X-Content-Type-Options", "nosniff"))
            return HttpResponse(405, refusal + extra_headers, b"")
        etag = self.etag
        common = (
            ("Cache-Control", "public, max-age=0"),
            ("ETag", etag),
            ("Vary", "Accept-Encoding"),
        ) + extra_headers
        gzipped = _accepts_gzip(request.headers)
        body = self._gzip(name) if gzipped else self._file(name)
        # A 304 may carry Content-Length only as the 200 would (RFC 9110 8.6): the
        # length of the representation the request selects.
        length = (("Content-Length", str(len(body))),)
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and self._matches(if_none_match, etag):
            return HttpResponse(304, length + common, b"")
        content_type = "application/json; charset=utf-8" if name.endswith(".map") else (
            "application/javascript; charset=utf-8"
        )
        headers: tuple[tuple[str, str], ...] = (("Content-Type", content_type),)
        if gzipped:
            headers += (("Content-Encoding", "gzip"),)
        return HttpResponse(200, headers + length + common, body)

    @staticmethod
    def _matches(if_none_match: str, etag: str) -> bool:
        """RFC 9110 13.1.2: ``*``, or any listed tag equal by weak comparison."""
        for token in _tokens(if_none_match):
            if token == "*":
                return True
            if token.startswith("W/"):
                token = token[2:]
            if token == etag:
                return True
        return False

    def _file(self, name: str) -> bytes:
        data = self._files.get(name)
        if data is None:
            data = self._files[name] = read_client_file(name)
        return data

    def _gzip(self, name: str) -> bytes:
        data = self._gzipped.get(name)
        if data is None:
            # mtime=0: the same bytes every time (a stable representation for caches).
            data = self._gzipped[name] = gzip.compress(self._file(name), compresslevel=9, mtime=0)
        return data
