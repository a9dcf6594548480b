"""Acknowledgement values shared by the Socket.IO server and client (sans-I/O).

An acknowledgement travels as ``3[/nsp,]<id>[args...]``: a list of arguments that may be
empty (``3<id>[]``, JavaScript ``callback()``) or hold a single ``null``
(``3<id>[null]``, ``callback(null)``). Two conventions sit on top of that list:

* a handler's **return value** becomes the arguments: ``None`` → none, a ``tuple`` →
  one argument per element, anything else → that one argument (so a single ``null``
  is ``return (None,)``), and :data:`NO_ACK` → no acknowledgement at all;
* a ``call`` **result** is, by default, ``None`` for no arguments, the value for one,
  a tuple for several (convenient, but ``[]`` and ``[null]`` both give ``None``); with
  ``as_list=True`` it is the argument list exactly as received.
"""

from __future__ import annotations

from typing import Any

from ..errors import VolleyError

__all__ = ["NO_ACK", "AckError", "ack_arguments", "ack_result"]


class AckError(VolleyError):
    """An acknowledgement was answered twice."""


class _NoAck:
    """The type of :data:`NO_ACK`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_ACK"

    def __reduce__(self) -> str:
        return "NO_ACK"


#: Returned by a handler that must not answer the acknowledgement the peer asked for
#: (Node: the listener never calls its callback). The peer's own timeout, if any, fires.
NO_ACK: Any = _NoAck()


def ack_arguments(result: Any) -> tuple[Any, ...] | None:
    """A handler's return value as acknowledgement arguments; ``None`` for :data:`NO_ACK`."""
    if result is None:
        return ()
    if result.__class__ is tuple:
        return result
    if result is NO_ACK:
        return None
    if isinstance(result, tuple):
        return tuple(result)
    return (result,)


def ack_result(args: list[Any], as_list: bool = False) -> Any:
    """What ``call`` returns for the acknowledgement arguments ``args``."""
    if as_list:
        return list(args)
    if not args:
        return None
    if len(args) == 1:
        return args[0]
    return tuple(args)
