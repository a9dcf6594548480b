"""The receive-side wait shared by WebSocket connections and Engine.IO sessions."""

from __future__ import annotations

from typing import Any

import trio


class ReceiverWait:
    """Mixin: tasks waiting for the next message, woken all at once by the producer.

    The usual single receiver parks with ``wait_task_rescheduled`` and costs no parking
    lot; extra concurrent receivers share one, created on first use. The class using it
    declares the ``_recv_task`` and ``_recv_lot`` slots (this mixin has none, so an idle
    object holds two ``None`` and nothing else).
    """

    __slots__ = ()

    _recv_task: Any
    _recv_lot: trio.lowlevel.ParkingLot | None

    async def _wait_woken(self) -> None:
        """Park until :meth:`_wake_receivers` (or cancellation)."""
        if self._recv_task is not None:
            # Several concurrent receivers: the extra ones use a parking lot.
            if self._recv_lot is None:
                # The slot is the using class's (mypy sees only this mixin's empty one).
                self._recv_lot = trio.lowlevel.ParkingLot()  # type: ignore[misc]
            await self._recv_lot.park()
            return
        task = trio.lowlevel.current_task()
        self._recv_task = task

        def abort(_: Any) -> trio.lowlevel.Abort:
            if self._recv_task is task:
                self._recv_task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _wake_receivers(self) -> None:
        task = self._recv_task
        if task is not None:
            self._recv_task = None
            trio.lowlevel.reschedule(task)
        if self._recv_lot is not None:
            self._recv_lot.unpark_all()
