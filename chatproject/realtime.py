"""Publishing events to WebSocket consumers over the channel layer.

The channel layer is an at-most-once bus: an event can be dropped when a
consumer's queue is full or Redis is unavailable. Nothing here may fail the
caller's request for that reason, because the database write has already
committed and clients recover missed messages with `sync`.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


def room_group(room_id: int) -> str:
    return f"room.{room_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def publish(group: str, event: dict) -> None:
    """Send an event to a group from synchronous code; log and drop on failure."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, event)
    except Exception:
        logger.exception("Failed to publish %s to %s; clients recover with sync", event.get("type"), group)


def publish_on_commit(group: str, event: dict, using: str) -> None:
    """Publish once the transaction on `using` commits (at once outside one)."""
    from django.db import transaction

    transaction.on_commit(lambda: publish(group, event), using=using)
