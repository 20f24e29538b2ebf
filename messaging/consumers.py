"""The WebSocket consumer at /ws/: one socket per client, every room at once.

The consumer stays thin: it validates a frame, makes one hop into a
synchronous action or query, and replies. Client frames are dispatched
through CLIENT_FRAMES only. A client's "type" never reaches the
method-name dispatch, which serves only the server's ASGI events and the
user events that the process's hub and revalidation sweep post.
"""

import asyncio
import json
import logging
import time
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils.translation import gettext as _

from chatproject.errors import ChatError, InternalError, NotMember, RateLimited
from chatproject.loops import for_running_loop
from messaging import frames
from messaging.actions import send_message
from messaging.fanout import get_hub
from messaging.payloads import frame_text
from messaging.queries import DEFAULT_SYNC_BATCH, messages_after, room_summaries
from messaging.socket_auth import open_socket, reload_socket_user, session_key_from_scope
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

# Events for one user that the process's hub hands to each of the user's
# sockets (messaging.fanout), plus "revalidate" from the process's
# revalidation sweep. Their handlers run one at a time per socket, between
# client frames, never during one.
USER_EVENTS = frozenset(
    {
        "membership.joined",
        "membership.left",
        "session.ended",
        "user.deactivated",
        "user.credentials_changed",
        "user.renamed",
        "revalidate",
    }
)
ASGI_EVENTS = frozenset({"websocket.connect", "websocket.receive", "websocket.disconnect"})


# The sockets' database work runs on this many threads per process, each
# with its own connection to each database it uses. Channels' default runs
# it all on one thread, where one hung shard or one held row lock stalls
# every room of the process. With a pool, other rooms keep going. The pool
# also bounds the process's connections to DB_THREADS x databases; the
# handshake's session and user are read here too (messaging.socket_auth).
DB_THREADS = settings.CHAT_DB_THREADS
_db_executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="chat-db")


def db_hop(function):
    """Wrap `function` to run on the socket database pool, cleaning up connections."""
    return database_sync_to_async(function, thread_sensitive=False, executor=_db_executor)


class TokenBucket:
    __slots__ = ("capacity", "tokens", "per_second", "updated")

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
    # Consumer state is set in connect; these defaults cover a socket whose
    # handshake failed before it got there.
    user = None
    session_key = None

    async def __call__(self, scope, receive, send):
        # Replaces AsyncConsumer.__call__, which gives every socket a channel
        # of its own and a second reader task on it. The process's hub
        # routes this socket's room and user events to it directly, so it
        # reads from the server alone.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        # Client frames and user events take turns under this lock, so an
        # event never lands in the middle of a frame's handling.
        self.turn = asyncio.Lock()
        self.pending_events: list[dict] = []
        self.event_task: asyncio.Task | None = None
        self.room_ids: set[int] = set()
        # While True, room events wait in deferred_texts: during connect
        # (until hello is out) and while a client frame is being handled.
        self.handling_frame = True
        self.deferred_texts: list[str] = []
        try:
            while True:
                message = await receive()
                async with self.turn:
                    await self.dispatch(message)
        except StopConsumer:
            pass
        finally:
            if self.event_task is not None:
                self.event_task.cancel()

    async def dispatch(self, message):
        # Replaces AsyncConsumer.dispatch: it skips the database clean-up hop
        # for every event and drops (instead of crashing on) unknown types.
        if message.get("type") not in ASGI_EVENTS:
            logger.warning("Dropped a server event of unknown type %r", message.get("type"))
            return
        await getattr(self, get_handler_name(message))(message)

    def post_event(self, event: dict) -> None:
        """Queue a user event for this socket and start handling the queue if idle.

        The hub calls this for every socket of a user, so it only appends
        and creates a task, without awaiting anything.
        """
        self.pending_events.append(event)
        if self.event_task is None:
            self.event_task = asyncio.get_running_loop().create_task(self._handle_events())

    async def _handle_events(self) -> None:
        try:
            while self.pending_events:
                event = self.pending_events.pop(0)
                event_type = event.get("type")
                if event_type not in USER_EVENTS:
                    logger.warning("Dropped a user event of unknown type %r", event_type)
                    continue
                async with self.turn:
                    if self.user is None:
                        # Closed (or never opened) while the event waited.
                        return
                    try:
                        await getattr(self, get_handler_name(event))(event)
                    except Exception:
                        # One failed event (say, Redis unreachable during a
                        # group_add) must not close the socket; revalidation
                        # repairs subscriptions later.
                        logger.exception("Handling %s for user %s failed", event_type, self.user.pk)
        finally:
            self.event_task = None

    # Connection life cycle

    async def connect(self):
        session_key = session_key_from_scope(self.scope)
        try:
            opened = await db_hop(open_socket)(session_key)
        except Exception:
            logger.exception("Reading the session of a WebSocket handshake failed")
            await self._fail_open()
            return
        if opened is None:
            # Closing before accept rejects the handshake with HTTP 403.
            logger.info("Rejected a WebSocket handshake without a valid session or active account")
            await self.close()
            return
        self.user, room_ids = opened
        self.session_key = session_key
        # Nothing reads the handshake's headers again; the server keeps its
        # own copy, and this one would cost every open socket a kilobyte.
        self.scope = {"type": "websocket", "path": self.scope.get("path")}
        self.rate = TokenBucket(RATE_BURST, RATE_PER_SECOND)

        # Subscribe before reading last_seq, so a message committed in
        # between is delivered to this socket rather than missed. The user's
        # group comes first for the same reason: a membership change after
        # it arrives as an event, one before it shows in the second read.
        hub = get_hub()
        try:
            await hub.subscribe_user(self, self.user.pk)
            for room_id in room_ids:
                await hub.subscribe(self, room_id)
                self.room_ids.add(room_id)
            rooms = await db_hop(room_summaries)(self.user)
        except Exception:
            logger.exception("Opening a socket for user %s failed", self.user.pk)
            await self._fail_open()
            return

        # A room joined between the two reads is announced after hello, by
        # membership_joined, which reads its last_seq only once subscribed.
        # A room left in between is dropped.
        current = {room["id"] for room in rooms}
        joined_meanwhile = current - self.room_ids
        for room_id in self.room_ids - current:
            await self.membership_left({"room": room_id}, announce=False)
        rooms = [room for room in rooms if room["id"] not in joined_meanwhile]

        await self.accept()
        await self.send_frame({"type": "hello", "user": self.user.public_dict(), "rooms": rooms})
        await self._flush_deferred()
        for room_id in joined_meanwhile:
            self.post_event({"type": "membership.joined", "room": room_id})
        get_revalidation_sweep().add(self)

    async def _fail_open(self) -> None:
        # Leave no group membership behind for a socket that never opened.
        # Accept, then close with 1011: a rejected handshake (403) means a
        # bad session to clients, which would send the user to log in.
        await self._unsubscribe_all()
        self.user = None
        await self.accept()
        await self.close(code=CLOSE_SERVER_ERROR)

    async def disconnect(self, code):
        get_revalidation_sweep().discard(self)
        await self._unsubscribe_all()
        self.user = None

    async def _unsubscribe_all(self) -> None:
        if self.user is None:
            return
        hub = get_hub()
        try:
            for room_id in list(self.room_ids):
                await hub.unsubscribe(self, room_id)
            await hub.unsubscribe_user(self, self.user.pk)
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
            await self.base_send({"type": "websocket.send", "text": text})

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

    async def membership_left(self, event, announce=True):
        room_id = event["room"]
        was_member = room_id in self.room_ids
        self.room_ids.discard(room_id)
        await get_hub().unsubscribe(self, room_id)
        if was_member and announce:
            await self.send_frame({"type": "room.left", "room": room_id})

    async def session_ended(self, event):
        if event.get("session_key") and event["session_key"] == self.session_key:
            await self.close(code=CLOSE_LOGGED_OUT)

    async def user_deactivated(self, event):
        await self.close(code=CLOSE_DEACTIVATED)

    async def user_credentials_changed(self, event):
        # Every session but the one that changed the password now fails
        # revalidation. That one is re-hashed by the view right after the
        # save that sent this event, so give the view a moment to finish
        # (without holding up the socket's frames meanwhile).
        asyncio.get_running_loop().call_later(CREDENTIALS_SETTLE_SECONDS, self.post_event, {"type": "revalidate"})

    async def user_renamed(self, event):
        # Messages this socket sends carry the author's name, and the
        # client shows the user it got in hello.
        user = await db_hop(reload_socket_user)(self.user.pk)
        if user is None:
            await self.close(code=CLOSE_DEACTIVATED)
            return
        self.user = user
        await self.send_frame({"type": "user.updated", "user": user.public_dict()})

    # Periodic repair

    async def revalidate(self, event=None) -> None:
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


class RevalidationSweep:
    """Posts a "revalidate" event to each open socket of a process, in turn.

    One task per process walks a ring of its sockets, one socket every
    REVALIDATE_SECONDS / (open sockets), so each is revalidated about once
    a period, the first time about a period after it opened. A sleeping task
    per socket did the same at the cost of memory for every idle socket.
    """

    def __init__(self):
        self.sockets: set = set()
        # Weak references, so a closed socket waiting for its turn in the
        # ring does not keep its consumer alive.
        self.ring: deque = deque()
        self.task: asyncio.Task | None = None

    def add(self, consumer) -> None:
        self.sockets.add(consumer)
        self.ring.append(weakref.ref(consumer))
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, consumer) -> None:
        self.sockets.discard(consumer)

    async def _run(self) -> None:
        try:
            while self.sockets:
                await asyncio.sleep(REVALIDATE_SECONDS / max(len(self.sockets), 1))
                while self.ring:
                    reference = self.ring.popleft()
                    consumer = reference()
                    if consumer is not None and consumer in self.sockets:
                        self.ring.append(reference)
                        consumer.post_event({"type": "revalidate"})
                        break
        finally:
            self.task = None


_sweeps: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RevalidationSweep]" = weakref.WeakKeyDictionary()


def get_revalidation_sweep() -> RevalidationSweep:
    return for_running_loop(_sweeps, RevalidationSweep)


CLIENT_FRAMES = {
    "message.send": ChatConsumer.on_message_send,
    "sync": ChatConsumer.on_sync,
    "ping": ChatConsumer.on_ping,
}
