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

Events for one user (logout, deactivation, membership changes) take the
same path through the user's group, so a socket needs no channel of its
own: no per-socket queue or reader task, and one group_add per user and
process rather than per socket.
"""

import asyncio
import logging
import weakref
from collections import deque

from channels.layers import get_channel_layer

from chatproject.loops import for_running_loop
from chatproject.realtime import room_group, user_group

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
# Room frames that arrive within this window go out together, so daphne
# (Twisted) writes each socket once for all of them. Otherwise it registers
# the socket for writing, writes and unregisters it again for every frame,
# which under a burst was most of daphne's CPU.
DELIVERY_BATCH_SECONDS = 0.005
RETRY_SECONDS = (0.1, 0.5, 1, 2, 5)


class RoomHub:
    """Routes a process's room and user events to its local sockets.

    Rooms and users are handled alike: the process's channel joins the
    group of a room (or user) while at least one local socket is in it.
    Room events carry a ready text frame and go to every socket in the
    room. User events (logout, membership changes) go to each of that
    user's sockets through `consumer.post_event`, which only queues the
    event, so the reader goes on at once.
    """

    def __init__(self, layer):
        self.layer = layer
        self.channel_name: str | None = None
        self.sockets: dict[int, set] = {}
        self.user_sockets: dict[int, set] = {}
        # Resolved once the group_add for a group has returned. A socket that
        # joins while it is in flight waits for it before reading last_seq,
        # or a message committed in between would reach neither.
        self._subscribed: dict[str, asyncio.Future] = {}
        self._tasks: list[asyncio.Task] = []
        self._start_lock = asyncio.Lock()
        self._frames: deque[dict] = deque()
        self._frames_waiting = asyncio.Event()

    async def _ensure_started(self) -> None:
        if self.channel_name is not None:
            return
        async with self._start_lock:
            if self.channel_name is None:
                channel_name = await self.layer.new_channel(prefix=channel_prefix(self.layer))
                self._tasks = [
                    asyncio.create_task(self._read_forever(channel_name)),
                    asyncio.create_task(self._deliver_forever()),
                    asyncio.create_task(self._refresh_forever(channel_name)),
                ]
                self.channel_name = channel_name

    async def subscribe(self, consumer, room_id: int) -> None:
        await self._join(self.sockets, room_id, room_group(room_id), consumer)

    async def unsubscribe(self, consumer, room_id: int) -> None:
        await self._leave(self.sockets, room_id, room_group(room_id), consumer)

    async def subscribe_user(self, consumer, user_id: int) -> None:
        await self._join(self.user_sockets, user_id, user_group(user_id), consumer)

    async def unsubscribe_user(self, consumer, user_id: int) -> None:
        await self._leave(self.user_sockets, user_id, user_group(user_id), consumer)

    def is_subscribed(self, consumer, room_id: int) -> bool:
        return consumer in self.sockets.get(room_id, ())

    async def _join(self, table: dict, key: int, group: str, consumer) -> None:
        await self._ensure_started()
        table.setdefault(key, set()).add(consumer)
        subscribed = self._subscribed.get(group)
        if subscribed is None:
            subscribed = self._subscribed[group] = asyncio.get_running_loop().create_future()
            try:
                await self.layer.group_add(group, self.channel_name)
            except Exception as error:
                del self._subscribed[group]
                subscribed.set_exception(error)
                subscribed.exception()  # retrieved, so asyncio does not log it as unhandled
                self._discard(table, key, group, consumer)
                raise
            subscribed.set_result(None)
        if subscribed.done() and subscribed.exception() is None:
            return
        try:
            await asyncio.shield(subscribed)
        except Exception:
            self._discard(table, key, group, consumer)
            raise

    async def _leave(self, table: dict, key: int, group: str, consumer) -> None:
        if self._discard(table, key, group, consumer) and self.channel_name is not None:
            await self.layer.group_discard(group, self.channel_name)

    def _discard(self, table: dict, key: int, group: str, consumer) -> bool:
        """Remove a socket from a group locally; return True if it was the last one."""
        members = table.get(key)
        if members is None:
            return False
        members.discard(consumer)
        if members:
            return False
        del table[key]
        self._subscribed.pop(group, None)
        return True

    async def deliver(self, event: dict) -> int:
        """Send a chat.frame event's text to every local socket of its room; return the count."""
        delivered = 0
        text = event["text"]
        for consumer in list(self.sockets.get(event["room"], ())):
            try:
                await consumer.deliver_room_text(text)
                delivered += 1
            except Exception:
                # One broken socket must not stop delivery to the others.
                logger.warning("Delivery to a socket of room %s failed", event["room"], exc_info=True)
        return delivered

    def deliver_user_event(self, event: dict) -> int:
        """Hand a user event to each local socket of its user; return the count."""
        consumers = list(self.user_sockets.get(event["user"], ()))
        for consumer in consumers:
            consumer.post_event(event)
        return len(consumers)

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
                self._frames.append(event)
                self._frames_waiting.set()
            elif isinstance(event.get("user"), int):
                self.deliver_user_event(event)
            else:
                logger.warning("Dropped an event of type %r on the room hub channel", event.get("type"))

    async def _deliver_forever(self) -> None:
        # One task delivers every room frame, so each socket gets them in
        # the order the channel layer handed them over.
        while True:
            await self._frames_waiting.wait()
            await asyncio.sleep(DELIVERY_BATCH_SECONDS)
            self._frames_waiting.clear()
            while self._frames:
                await self.deliver(self._frames.popleft())

    async def _refresh_forever(self, channel_name: str) -> None:
        while True:
            await asyncio.sleep(GROUP_REFRESH_SECONDS)
            groups = [room_group(room_id) for room_id in list(self.sockets)]
            groups += [user_group(user_id) for user_id in list(self.user_sockets)]
            for group in groups:
                try:
                    await self.layer.group_add(group, channel_name)
                except Exception:
                    logger.warning("Refreshing the hub's group %s failed", group, exc_info=True)


# One hub per event loop (chatproject.loops).
_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RoomHub]" = weakref.WeakKeyDictionary()


def get_hub() -> RoomHub:
    return for_running_loop(_hubs, lambda: RoomHub(get_channel_layer()))
