"""Fan-out: frame a message once, write the same bytes to every receiver."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Union

from ..websocket.deflate import PreparedMessage
from ._connection import FANOUT_LIMIT, WebSocketConnection


def broadcast(
    connections: Iterable[WebSocketConnection],
    message: Union[str, bytes, bytearray, memoryview],
    *,
    limit: int = FANOUT_LIMIT,
) -> int:
    """Send ``message`` to every open server-side connection without waiting.

    The frame is encoded once (and compressed once per permessage-deflate variant,
    through ``volleyio.websocket.deflate.PreparedMessage``) and the same bytes go to
    every receiver: straight
    to the kernel when it takes them, otherwise into that connection's outbound
    buffer, drained by a helper task. A receiver whose buffered bytes would exceed
    ``limit`` is a slow consumer: it is closed with 1008 "slow consumer" and the
    others are unaffected. Returns the number of connections the message was queued
    for. Client-side connections (which must mask) are skipped.
    """
    prepared = PreparedMessage(message if isinstance(message, str) else bytes(message))
    count = 0
    for ws in list(connections):
        if ws.client or ws.state != "OPEN":
            continue
        # One plain frame for everyone; compressed once per deflate variant (or through
        # the connection's own compressor when it keeps its context).
        extensions = ws.extensions
        data = prepared.frames_for(extensions[0] if len(extensions) == 1 else None)
        if ws.write_frame_nowait(data, limit):
            count += 1
        else:
            ws._slow_consumer()
    return count
