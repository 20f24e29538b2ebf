"""Sending a message: the one place where a message is written.

The WebSocket consumer, the pages and the REST API all call send_message.
The order of work is what makes delivery safe over an at-most-once channel
layer: validate, check membership, write the message and its sequence
number in one shard transaction, and only after that commits publish it.
A client that misses the publication still finds the message with sync.
"""

import logging
import re
import unicodedata
from dataclasses import dataclass

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from chatproject.errors import BodyEmpty, BodyTooLong, ClientIdReused, InvalidInput, ShardUnavailable
from chatproject.realtime import publish, room_group
from messaging.ids import next_message_id
from messaging.models import MAX_BODY_LENGTH, MAX_CLIENT_ID_LENGTH, Message
from messaging.payloads import frame_text, message_dict
from messaging.sequences import allocate_seq
from messaging.sharding import check_bucket_open, placement_for_room
from rooms.access import require_member

logger = logging.getLogger(__name__)

CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,%d}" % MAX_CLIENT_ID_LENGTH)


@dataclass(frozen=True)
class SendResult:
    message: dict
    # False when the send was a retry of a message already stored.
    created: bool


def validate_body(body) -> str:
    """Raise unless `body` is a storable message body; return it unchanged."""
    if not isinstance(body, str):
        raise InvalidInput(_("The message body must be a string."), field="body")
    if all(character.isspace() or unicodedata.category(character) == "Cf" for character in body):
        # Whitespace and invisible format characters (zero-width space,
        # joiners, direction marks) would show as a blank message.
        raise BodyEmpty()
    if len(body) > MAX_BODY_LENGTH:
        raise BodyTooLong(
            _("The message body has %(length)d characters; the maximum is %(max)d.")
            % {"length": len(body), "max": MAX_BODY_LENGTH},
            max_length=MAX_BODY_LENGTH,
        )
    if "\x00" in body:
        raise InvalidInput(_("The message body contains a NUL character."), field="body")
    try:
        body.encode("utf-8")
    except UnicodeEncodeError:
        # JSON can carry an unpaired surrogate (\ud800) that no UTF-8
        # column can store.
        raise InvalidInput(_("The message body is not valid Unicode."), field="body") from None
    return body


def validate_client_id(client_id) -> str:
    if not isinstance(client_id, str) or not CLIENT_ID_PATTERN.fullmatch(client_id):
        raise InvalidInput(
            _("client_id must be 1 to %(max)d letters, digits or . _ : - characters.")
            % {"max": MAX_CLIENT_ID_LENGTH},
            field="client_id",
        )
    return client_id


def _existing_send(alias: str, room_id: int, author, client_id: str, body: str) -> SendResult | None:
    message = (
        Message.objects.using(alias).filter(room_id=room_id, author_id=author.pk, client_id=client_id).first()
    )
    if message is None:
        return None
    if message.body != body:
        raise ClientIdReused(client_id=client_id)
    return SendResult(message_dict(message, author.public_dict()), created=False)


def send_message(author, room_id, body, client_id) -> SendResult:
    """Store a message and publish it to the room once it commits.

    A retry with the same author, room and client_id returns the stored
    message without storing or publishing it again.
    """
    body = validate_body(body)
    client_id = validate_client_id(client_id)
    require_member(author, room_id)

    placement = placement_for_room(room_id)
    if placement.frozen:
        raise ShardUnavailable(_("This room's messages are being moved; try again in a few seconds."))
    alias = placement.alias

    try:
        existing = _existing_send(alias, room_id, author, client_id, body)
        if existing is not None:
            return existing
        with transaction.atomic(using=alias):
            seq = allocate_seq(alias, room_id)
            # The room's sequence row stays locked until commit, so a bucket
            # move that closes this shard's fence waits for this send
            # (messaging.sharding explains the order).
            check_bucket_open(alias, room_id)
            message = Message(
                id=next_message_id(),
                room_id=room_id,
                seq=seq,
                author_id=author.pk,
                body=body,
                client_id=client_id,
                created_at=timezone.now(),
            )
            message.save(using=alias, force_insert=True)
            payload = message_dict(message, author.public_dict())
            event = {
                "type": "chat.frame",
                "room": room_id,
                "text": frame_text({"type": "message.new", "message": payload}),
            }
            transaction.on_commit(lambda: publish(room_group(room_id), event), using=alias)
    except IntegrityError:
        # A concurrent retry of the same client_id committed first; the
        # whole transaction rolled back, so no sequence number was used.
        existing = _existing_send(alias, room_id, author, client_id, body)
        if existing is None:
            raise
        return existing
    except DatabaseError as error:
        logger.error("Send to room %s failed on shard %s: %s", room_id, alias, error)
        raise ShardUnavailable() from error

    logger.debug("Stored message %s (seq %s) in room %s on %s", message.id, message.seq, room_id, alias)
    return SendResult(payload, created=True)
