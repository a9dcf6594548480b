"""The :class:`Ack` object a handler receives when it answers later (server and client)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..socketio.acks import AckError

__all__ = ["Ack", "wants_ack"]


class Ack:
    """The acknowledgement one received event asked for, to answer now or later.

    A handler gets one when it declares a keyword-only parameter named ``ack``::

        @sio.on("job")
        async def job(socket, spec, *, ack: Ack):
            sio.start_background_task(run_job, spec, ack)   # answers when done

    Then its return value is not the acknowledgement: ``ack(*args)`` is, called from
    this task or any other, at any time while the peer still waits (its own timeout
    decides how long). ``ack()`` sends ``[]``, ``ack(None)`` sends ``[null]``. It never
    waits (the packet is queued like an emit) and does nothing once the socket is gone.
    Answering twice raises :class:`AckError`; never answering sends nothing (Node's
    listener that does not call its callback). ``requested`` is False when the peer
    did not ask for an acknowledgement: calling it then sends nothing either.
    """

    __slots__ = ("_send", "_sent")

    def __init__(self, send: Callable[[tuple[Any, ...]], None] | None) -> None:
        self._send = send
        self._sent = False

    @property
    def requested(self) -> bool:
        """Whether the peer asked for an acknowledgement."""
        return self._send is not None

    @property
    def sent(self) -> bool:
        """Whether this acknowledgement was answered already."""
        return self._sent

    def __call__(self, *args: Any) -> None:
        """Answer with ``args`` (encoded as the acknowledgement's argument list).

        Raises :class:`AckError` when already answered, and what the encoder raises
        (``SocketIOEncodeError``: NaN, too deep...) without marking it answered."""
        if self._sent:
            raise AckError("this acknowledgement was answered already")
        if self._send is not None:
            self._send(args)
        self._sent = True

    def __repr__(self) -> str:
        state = "sent" if self._sent else "pending" if self._send is not None else "not requested"
        return f"<Ack {state}>"


def wants_ack(func: Callable[..., Any]) -> bool:
    """Whether ``func`` declares a keyword-only parameter ``ack``."""
    try:
        parameter = inspect.signature(func).parameters.get("ack")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.kind is inspect.Parameter.KEYWORD_ONLY
