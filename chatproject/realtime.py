"""Publishing events to WebSocket consumers over the channel layer.

The channel layer is an at-most-once bus: an event can be dropped when a
consumer's queue is full or Redis is unavailable. Nothing here may fail the
caller's request for that reason, because the database write has already
committed and clients recover missed messages with `sync`.
"""

import asyncio
import logging
import os
import weakref

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer

from chatproject.loops import for_running_loop

logger = logging.getLogger(__name__)


def room_group(room_id: int) -> str:
    return f"room.{room_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


class _Publisher:
    """Sends a server loop's queued events one after another, in order."""

    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            group, event = await self.queue.get()
            await _group_send(group, event)


_publishers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Publisher]" = weakref.WeakKeyDictionary()


def _enqueue(group: str, event: dict) -> None:
    for_running_loop(_publishers, _Publisher).queue.put_nowait((group, event))


async def _group_send(group: str, event: dict) -> None:
    try:
        await get_channel_layer().group_send(group, event)
    except Exception:
        logger.exception("Failed to publish %s to %s; clients recover with sync", event.get("type"), group)


def _server_loop():
    """Return the event loop whose sync_to_async thread this is, or None."""
    if getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid():
        return None
    return getattr(SyncToAsync.threadlocal, "main_event_loop", None)


def publish(group: str, event: dict) -> None:
    """Send an event to a group from synchronous code; log and drop on failure.

    Inside a server (a thread of sync_to_async or database_sync_to_async)
    the event is handed to the server's loop without waiting: the caller's
    reply is not delayed by the channel layer, and a process shutting down
    cannot deadlock with a thread blocked on a loop that no longer runs.
    One queue per loop keeps events in the order they were published.
    """
    if get_channel_layer() is None:
        return
    loop = _server_loop()
    if loop is not None:
        if not loop.is_running():
            # The server is shutting down; waiting on its loop would hang.
            logger.warning("Dropped %s to %s: the event loop has stopped", event.get("type"), group)
            return
        try:
            loop.call_soon_threadsafe(_enqueue, group, event)
        except RuntimeError:
            logger.warning("Dropped %s to %s: the event loop is closed", event.get("type"), group)
        return
    # No server loop: a management command or plain synchronous code.
    async_to_sync(_group_send)(group, event)


def publish_to_user(user_id: int, event: dict, using: str | None = None) -> None:
    """Publish an event to every socket of one user, after `using` commits if given.

    The event names its user, so a process's hub (messaging.fanout) can
    route it to that user's local sockets.
    """
    event = {**event, "user": user_id}
    if using is None:
        publish(user_group(user_id), event)
    else:
        publish_on_commit(user_group(user_id), event, using=using)


def publish_on_commit(group: str, event: dict, using: str) -> None:
    """Publish once the transaction on `using` commits (at once outside one)."""
    from django.db import transaction

    transaction.on_commit(lambda: publish(group, event), using=using)
