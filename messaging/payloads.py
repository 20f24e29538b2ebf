"""The JSON shapes of messages, shared by WebSocket frames, pages and the API."""

import json
from datetime import UTC

from django.contrib.auth import get_user_model


def iso_utc(moment) -> str:
    """Format an aware datetime as ISO-8601 in UTC with an explicit +00:00 offset."""
    return moment.astimezone(UTC).isoformat()


def author_dicts(author_ids) -> dict[int, dict]:
    """Return {user id: author dict} with one query for all ids."""
    User = get_user_model()
    users = User.objects.filter(pk__in=set(author_ids)).only("id", "username", "display_name")
    return {user.pk: user.public_dict() for user in users}


def message_dict(message, author: dict) -> dict:
    # The id goes out as a string: JavaScript numbers hold integers exactly
    # only up to 2**53, and message ids use all 63 bits.
    return {
        "id": str(message.id),
        "room": message.room_id,
        "seq": message.seq,
        "author": author,
        "body": message.body,
        "created_at": iso_utc(message.created_at),
        "client_id": message.client_id,
    }


def message_dicts(messages) -> list[dict]:
    messages = list(messages)
    authors = author_dicts(message.author_id for message in messages)
    deleted = {"id": None, "username": "", "display_name": "(deleted user)"}
    return [message_dict(message, authors.get(message.author_id, deleted)) for message in messages]


def frame_text(frame: dict) -> str:
    """Serialise a frame once; every socket then sends the same text."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
