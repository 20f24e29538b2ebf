"""The WebSocket consumer at /ws/: one socket per client, every room at once.

The consumer stays thin: it validates a frame, makes one hop into a
synchronous action or query, and replies. Client frames are dispatched
through CLIENT_FRAMES only; a client's "type" never reaches Channels'
method-name dispatch, which serves channel-layer events alone.
"""

import asyncio
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils.translation import gettext as _

from chatproject.errors import ChatError, InternalError, NotMember, RateLimited
from chatproject.realtime import user_group
from messaging import frames
from messaging.actions import send_message
from messaging.fanout import get_hub
from messaging.payloads import frame_text
from messaging.queries import DEFAULT_SYNC_BATCH, member_rooms, messages_after, room_summaries, summarise_rooms
from messaging.socket_checks import SocketState, socket_still_valid
from rooms.access import is_member

logger = logging.getLogger(__name__)

# Close codes sent by the server (4000-4999 are free for applications).
CLOSE_LOGGED_OUT = 4001
CLOSE_DEACTIVATED = 4003
CLOSE_SERVER_ERROR = 1011

# Every socket re-reads its session, account and memberships this often,
# which repairs the state if a membership or logout event was dropped by
# the channel layer. The events do the prompt work; this is the fallback,
# and its queries were the main idle cost per socket at 30 s.
REVALIDATE_SECONDS = 120

CREDENTIALS_SETTLE_SECONDS = 2

# Token bucket per socket: RATE_BURST frames at once, RATE_PER_SECOND after.
RATE_BURST = 30
RATE_PER_SECOND = 10.0

# Channel-layer events this consumer handles. None of them needs the
# database hop that Channels runs before every handler by default, and
# handlers that do use the database go through database_sync_to_async,
# which cleans up connections itself.
LAYER_EVENTS = frozenset(
    {
        "membership.joined",
        "membership.left",
        "session.ended",
        "user.deactivated",
        "user.credentials_changed",
    }
)
ASGI_EVENTS = frozenset({"websocket.connect", "websocket.receive", "websocket.disconnect"})


# The sockets' database work runs on this many threads per process, each
# with its own connection to each database it uses. Channels' default runs
# it all on one thread, where one hung shard or one held row lock stalls
# every room of the process. With a pool, other rooms keep going. The pool
# also bounds the process's connections: (DB_THREADS + 1) x databases, with
# Channels' own thread, which reads the session and user at each handshake.
DB_THREADS = settings.CHAT_DB_THREADS
_db_executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="chat-db")


def db_hop(function):
    """Wrap `function` to run on the socket database pool, cleaning up connections."""
    return database_sync_to_async(function, thread_sensitive=False, executor=_db_executor)


class TokenBucket:
    def __init__(self, burst: int, per_second: float):
        self.capacity = burst
        self.tokens = float(burst)
        self.per_second = per_second
        self.updated = time.monotonic()

    def take(self) -> float:
        """Take a token; return 0 on success, else seconds until one is free."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second


class ChatConsumer(AsyncWebsocketConsumer):
    async def dispatch(self, message):
        # Replaces AsyncConsumer.dispatch: it skips the database clean-up hop
        # for every event and drops (instead of crashing on) unknown types.
        event_type = message.get("type")
        if event_type not in LAYER_EVENTS and event_type not in ASGI_EVENTS:
            logger.warning("Dropped channel-layer event of unknown type %r", event_type)
            return
        handler = getattr(self, get_handler_name(message))
        if event_type in ASGI_EVENTS:
            await handler(message)
            return
        try:
            await handler(message)
        except Exception:
            # One failed event (say, Redis unreachable during group_add) must
            # not close the socket; revalidation repairs subscriptions later.
            logger.exception("Handling %s for user %s failed", event_type, getattr(getattr(self, "user", None), "pk", None))

    # Connection life cycle

    async def connect(self):
        self.user = self.scope.get("user")
        self.room_ids: set[int] = set()
        self.handling_frame = False
        self.deferred_texts: list[str] = []
        self.revalidate_task = None
        if self.user is None or not self.user.is_authenticated or not self.user.is_active:
            # Closing before accept rejects the handshake with HTTP 403.
            logger.info("Rejected a WebSocket handshake without a valid session or active account")
            await self.close()
            return
        session = self.scope.get("session")
        self.session_key = session.session_key if session is not None else None
        self.rate = TokenBucket(RATE_BURST, RATE_PER_SECOND)

        # Subscribe before reading last_seq, so a message committed in
        # between is queued for this socket rather than missed.
        try:
            await self.channel_layer.group_add(user_group(self.user.pk), self.channel_name)
            memberships = await db_hop(member_rooms)(self.user)
            hub = get_hub()
            for membership in memberships:
                await hub.subscribe(self, membership.room_id)
                self.room_ids.add(membership.room_id)
            rooms = await db_hop(summarise_rooms)(memberships)
        except Exception:
            # Leave no group membership behind for a socket that never opened.
            # Accept, then close with 1011: a rejected handshake (403) means a
            # bad session to clients, which would send the user to log in.
            logger.exception("Opening a socket for user %s failed", self.user.pk)
            await self._unsubscribe_all()
            await self.accept()
            await self.close(code=CLOSE_SERVER_ERROR)
            return

        await self.accept()
        await self.send_frame({"type": "hello", "user": self.user.public_dict(), "rooms": rooms})
        self.revalidate_task = asyncio.create_task(self._revalidate_forever())

    async def disconnect(self, code):
        if self.revalidate_task is not None:
            self.revalidate_task.cancel()
        if getattr(self, "user", None) is None or not self.user.is_authenticated:
            return
        await self._unsubscribe_all()

    async def _unsubscribe_all(self) -> None:
        hub = get_hub()
        try:
            for room_id in list(self.room_ids):
                await hub.unsubscribe(self, room_id)
            await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)
        except Exception:
            # Redis gone: its group entries expire with the layer's group_expiry.
            logger.warning("Could not leave the groups of user %s's socket", self.user.pk, exc_info=True)
        self.room_ids.clear()

    async def send_frame(self, frame: dict) -> None:
        await self.send(text_data=frame_text(frame))

    async def send_error(self, error: ChatError, client_id=None) -> None:
        frame = {"type": "error", **error.as_dict()}
        if isinstance(client_id, str):
            frame["client_id"] = client_id
        await self.send_frame(frame)

    # Frames from the client

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None:
            await self.send_error(frames.InvalidFrame(_("Binary frames are not supported; send JSON text frames.")))
            return
        if len(text_data) > frames.MAX_FRAME_CHARACTERS:
            await self.send_error(
                frames.InvalidFrame(
                    _("The frame is larger than %(max)d characters.") % {"max": frames.MAX_FRAME_CHARACTERS}
                )
            )
            return
        try:
            frame = json.loads(text_data)
        except (ValueError, RecursionError):
            # RecursionError: a few kilobytes of nested brackets exhaust the parser.
            await self.send_error(frames.InvalidFrame(_("The frame is not valid JSON.")))
            return
        if "\\u" in text_data and not frames.is_valid_unicode(frame):
            # A JSON escape can smuggle in an unpaired surrogate, which no
            # reply, database column or UTF-8 text frame can carry.
            await self.send_error(frames.InvalidFrame(_("The frame contains an unpaired surrogate (invalid Unicode).")))
            return
        if not isinstance(frame, dict):
            await self.send_error(frames.InvalidFrame(_("The frame must be a JSON object.")))
            return
        client_id = frame.get("client_id")
        frame_type = frame.get("type")
        handler = CLIENT_FRAMES.get(frame_type) if isinstance(frame_type, str) else None
        if handler is None and "type" not in frame:
            await self.send_error(frames.UnknownType(_("The frame has no “type” field.")), client_id)
            return
        if handler is None:
            detail = _("Unknown frame type %(type)s.") % {"type": json.dumps(frame_type, ensure_ascii=False)[:80]}
            await self.send_error(frames.UnknownType(detail), client_id)
            return
        wait = self.rate.take()
        if wait:
            await self.send_error(
                RateLimited(
                    _("Too many frames; wait %(seconds).2f s.") % {"seconds": wait}, retry_after=round(wait + 0.005, 2)
                ),
                client_id,
            )
            return
        self.handling_frame = True
        try:
            await handler(self, frame)
        except ChatError as error:
            await self.send_error(error, client_id)
        except Exception:
            # A bug must cost one frame, not the socket: log it and reply.
            logger.exception("Frame %s from user %s failed", frame_type, self.user.pk)
            await self.send_error(InternalError(), client_id)
        finally:
            await self._flush_deferred()

    async def deliver_room_text(self, text: str) -> None:
        """Send a room event's text frame; called by the process's room hub.

        While this socket is handling a frame, room events wait until its
        reply is out, so a sender always gets message.ack before the
        message.new of its own message, whatever process published it.
        """
        if self.handling_frame:
            self.deferred_texts.append(text)
        else:
            await self.send(text_data=text)

    async def _flush_deferred(self) -> None:
        # Events that arrive while earlier ones are being sent join the queue,
        # so the order of room events is kept.
        while self.deferred_texts:
            await self.send(text_data=self.deferred_texts.pop(0))
        self.handling_frame = False

    async def on_message_send(self, frame):
        frames.check_send(frame)
        result = await db_hop(send_message)(
            self.user, frame["room"], frame["body"], frame["client_id"]
        )
        await self.send_frame({"type": "message.ack", "client_id": frame["client_id"], "message": result.message})

    async def on_sync(self, frame):
        frames.check_sync(frame)
        messages, has_more = await db_hop(self._sync_batch)(
            frame["room"], frame["after_seq"], frame.get("limit", DEFAULT_SYNC_BATCH)
        )
        await self.send_frame(
            {"type": "sync.batch", "room": frame["room"], "messages": messages, "has_more": has_more}
        )

    def _sync_batch(self, room_id, after_seq, limit):
        if not is_member(self.user.pk, room_id):
            raise NotMember(room=room_id)
        return messages_after(room_id, after_seq, limit)

    async def on_ping(self, frame):
        frames.check_ping(frame)
        reply = {"type": "pong"}
        if "nonce" in frame:
            reply["nonce"] = frame["nonce"]
        await self.send_frame(reply)

    # Events from the channel layer

    async def membership_joined(self, event):
        room_id = event["room"]
        # Subscribe before reading last_seq, as connect does.
        hub = get_hub()
        await hub.subscribe(self, room_id)
        summaries = await db_hop(room_summaries)(self.user, [room_id])
        if not summaries:
            # Left again before this event arrived.
            await hub.unsubscribe(self, room_id)
            self.room_ids.discard(room_id)
            return
        new = room_id not in self.room_ids
        self.room_ids.add(room_id)
        if new:
            await self.send_frame({"type": "room.joined", "room": summaries[0]})

    async def membership_left(self, event):
        room_id = event["room"]
        was_member = room_id in self.room_ids
        self.room_ids.discard(room_id)
        await get_hub().unsubscribe(self, room_id)
        if was_member:
            await self.send_frame({"type": "room.left", "room": room_id})

    async def session_ended(self, event):
        if event.get("session_key") and event["session_key"] == self.session_key:
            await self.close(code=CLOSE_LOGGED_OUT)

    async def user_deactivated(self, event):
        await self.close(code=CLOSE_DEACTIVATED)

    async def user_credentials_changed(self, event):
        # Every session but the one that changed the password now fails
        # revalidation. That one is re-hashed by the view right after the
        # save that sent this event, so give the view a moment to finish.
        await asyncio.sleep(CREDENTIALS_SETTLE_SECONDS)
        await self.revalidate()

    # Periodic repair

    async def _revalidate_forever(self):
        try:
            while True:
                await asyncio.sleep(REVALIDATE_SECONDS * random.uniform(0.8, 1.2))
                await self.revalidate()
        except asyncio.CancelledError:
            pass

    async def revalidate(self) -> None:
        """Re-read session, account and memberships; close or resubscribe to match."""
        try:
            state, room_ids = await db_hop(socket_still_valid)(self.user.pk, self.session_key)
        except Exception:
            logger.exception("Revalidating the socket of user %s failed", self.user.pk)
            return
        if state == SocketState.ACCOUNT_INACTIVE:
            await self.close(code=CLOSE_DEACTIVATED)
            return
        if state == SocketState.SESSION_ENDED:
            await self.close(code=CLOSE_LOGGED_OUT)
            return
        for room_id in set(room_ids) - self.room_ids:
            await self.membership_joined({"room": room_id})
        for room_id in self.room_ids - set(room_ids):
            await self.membership_left({"room": room_id})


CLIENT_FRAMES = {
    "message.send": ChatConsumer.on_message_send,
    "sync": ChatConsumer.on_sync,
    "ping": ChatConsumer.on_ping,
}
