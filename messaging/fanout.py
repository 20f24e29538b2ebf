"""Per-process fan-out of room events.

Each server process subscribes to a room's channel-layer group once, on
one channel of its own, however many of its sockets are in the room. An
event for the room then costs the channel layer one delivery per process,
not one per socket, and the process hands the already serialised text
frame to each of its local sockets directly: no per-socket queue, no
per-socket JSON encoding and no database hop.

Membership is local too: a socket is registered for a room when it joins
and removed the moment it leaves, so a member who left gets nothing more
even before the channel layer has processed the group_discard.
"""

import asyncio
import logging
import weakref
from collections import defaultdict

from channels.layers import get_channel_layer

from chatproject.realtime import room_group

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "chathub"


def channel_prefix(layer) -> str:
    """Return the prefix for the hub's channel name on `layer`.

    channels_redis' RedisChannelLayer (4.3) reads every process-local
    channel through one loop that only serves names starting "specific.";
    a hub channel under another prefix starved behind the sockets' own
    channels and received only the first event. The other layers take any
    prefix, and "chathub" lets the in-memory layer give it its own capacity.
    """
    if type(layer).__name__ == "RedisChannelLayer":
        return "specific"
    return CHANNEL_PREFIX
# Channels' layers let group memberships expire (a day by default in
# channels_redis core); the hub adds its groups again well before that.
GROUP_REFRESH_SECONDS = 3600
RETRY_SECONDS = (0.1, 0.5, 1, 2, 5)


class RoomHub:
    def __init__(self, layer):
        self.layer = layer
        self.channel_name: str | None = None
        self.sockets: dict[int, set] = defaultdict(set)
        # Resolved once the group_add for a room has returned. A socket that
        # joins while it is in flight waits for it before reading last_seq,
        # or a message committed in between would reach neither.
        self._subscribed: dict[int, asyncio.Future] = {}
        self._tasks: list[asyncio.Task] = []
        self._start_lock = asyncio.Lock()

    async def _ensure_started(self) -> None:
        if self.channel_name is not None:
            return
        async with self._start_lock:
            if self.channel_name is None:
                channel_name = await self.layer.new_channel(prefix=channel_prefix(self.layer))
                self._tasks = [
                    asyncio.create_task(self._read_forever(channel_name)),
                    asyncio.create_task(self._refresh_forever(channel_name)),
                ]
                self.channel_name = channel_name

    async def subscribe(self, consumer, room_id: int) -> None:
        await self._ensure_started()
        self.sockets[room_id].add(consumer)
        subscribed = self._subscribed.get(room_id)
        if subscribed is None:
            subscribed = self._subscribed[room_id] = asyncio.get_running_loop().create_future()
            try:
                await self.layer.group_add(room_group(room_id), self.channel_name)
            except Exception as error:
                del self._subscribed[room_id]
                subscribed.set_exception(error)
                subscribed.exception()  # retrieved, so asyncio does not log it as unhandled
                self._discard(consumer, room_id)
                raise
            subscribed.set_result(None)
        try:
            await asyncio.shield(subscribed)
        except Exception:
            self._discard(consumer, room_id)
            raise

    async def unsubscribe(self, consumer, room_id: int) -> None:
        if self._discard(consumer, room_id) and self.channel_name is not None:
            await self.layer.group_discard(room_group(room_id), self.channel_name)

    def _discard(self, consumer, room_id: int) -> bool:
        """Remove a socket from a room locally; return True if it was the last one."""
        members = self.sockets.get(room_id)
        if members is None:
            return False
        members.discard(consumer)
        if members:
            return False
        del self.sockets[room_id]
        self._subscribed.pop(room_id, None)
        return True

    def is_subscribed(self, consumer, room_id: int) -> bool:
        return consumer in self.sockets.get(room_id, ())

    async def deliver(self, event: dict) -> int:
        """Send a chat.frame event's text to every local socket of its room; return the count."""
        delivered = 0
        for consumer in list(self.sockets.get(event["room"], ())):
            try:
                await consumer.deliver_room_text(event["text"])
                delivered += 1
            except Exception:
                # One broken socket must not stop delivery to the others.
                logger.warning("Delivery to a socket of room %s failed", event["room"], exc_info=True)
        return delivered

    async def _read_forever(self, channel_name: str) -> None:
        failures = 0
        while True:
            try:
                event = await self.layer.receive(channel_name)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis unreachable: wait and read again; the layer
                # reconnects, and clients recover missed messages with sync.
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                logger.warning("Reading the room hub channel failed; retrying in %s s", delay, exc_info=True)
                await asyncio.sleep(delay)
                continue
            failures = 0
            if event.get("type") == "chat.frame":
                await self.deliver(event)
            else:
                logger.warning("Dropped an event of type %r on the room hub channel", event.get("type"))

    async def _refresh_forever(self, channel_name: str) -> None:
        while True:
            await asyncio.sleep(GROUP_REFRESH_SECONDS)
            for room_id in list(self.sockets):
                try:
                    await self.layer.group_add(room_group(room_id), channel_name)
                except Exception:
                    logger.warning("Refreshing the hub's group for room %s failed", room_id, exc_info=True)


# One hub per event loop: a server process has one loop, while test runs
# create a loop per test, and a hub's tasks belong to the loop that made them.
_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RoomHub]" = weakref.WeakKeyDictionary()


def get_hub() -> RoomHub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = RoomHub(get_channel_layer())
    return hub
