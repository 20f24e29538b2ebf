"""Validation of the frames a client may send over the WebSocket.

A frame is accepted only with exactly the fields its type allows and the
right JSON types; anything else is rejected with invalid_frame before any
action runs, so a bad frame never reaches the database.
"""

import json

from django.utils.translation import gettext as _

from chatproject.errors import ChatError

MAX_FRAME_CHARACTERS = 64 * 1024

# Fields of a message that only the server sets. A client that sends one
# gets an error naming it instead of having it silently ignored.
SERVER_OWNED_FIELDS = frozenset({"id", "seq", "author", "author_id", "created_at", "message", "user"})


class InvalidFrame(ChatError):
    code = "invalid_frame"


class UnknownType(ChatError):
    code = "unknown_type"


def is_valid_unicode(frame) -> bool:
    """Return False if any string in the decoded frame cannot be encoded as UTF-8."""
    try:
        json.dumps(frame, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_int(value) -> bool:
    # JSON true/false decode to bool, which Python counts as int.
    return isinstance(value, int) and not isinstance(value, bool)


def require_fields(frame: dict, required: dict, optional: dict | None = None) -> None:
    """Check that `frame` has the required fields and no others.

    `required` and `optional` map a field name to a (checker, description)
    pair; the error names the first field that fails.
    """
    optional = optional or {}
    for name in frame:
        if name == "type" or name in required or name in optional:
            continue
        if name in SERVER_OWNED_FIELDS:
            raise InvalidFrame(_("The field “%(field)s” is set by the server; do not send it.") % {"field": name})
        raise InvalidFrame(_("Unknown field “%(field)s”.") % {"field": name})
    for name, (check, description) in required.items():
        if name not in frame:
            raise InvalidFrame(_("The field “%(field)s” is missing.") % {"field": name})
        if not check(frame[name]):
            raise InvalidFrame(_("The field “%(field)s” must be %(kind)s.") % {"field": name, "kind": description})
    for name, (check, description) in optional.items():
        if name in frame and not check(frame[name]):
            raise InvalidFrame(_("The field “%(field)s” must be %(kind)s.") % {"field": name, "kind": description})


# Ids and sequence numbers are signed 64-bit columns; a larger JSON number
# would overflow the database driver instead of matching nothing.
MAX_INTEGER = 2**63 - 1
ROOM_ID = (lambda value: _is_int(value) and 0 < value <= MAX_INTEGER, "an integer from 1 to 2^63 - 1")
NON_NEGATIVE = (lambda value: _is_int(value) and 0 <= value <= MAX_INTEGER, "an integer from 0 to 2^63 - 1")
POSITIVE = (lambda value: _is_int(value) and 0 < value <= MAX_INTEGER, "an integer from 1 to 2^63 - 1")
STRING = (lambda value: isinstance(value, str), "a string")
# A ping's nonce is echoed back as is, so it is kept short.
MAX_NONCE_LENGTH = 64
NONCE = (
    lambda value: isinstance(value, str) and len(value) <= MAX_NONCE_LENGTH,
    f"a string of at most {MAX_NONCE_LENGTH} characters",
)


def check_send(frame: dict) -> None:
    require_fields(frame, {"room": ROOM_ID, "body": STRING, "client_id": STRING})


def check_sync(frame: dict) -> None:
    require_fields(frame, {"room": ROOM_ID, "after_seq": NON_NEGATIVE}, {"limit": POSITIVE})


def check_ping(frame: dict) -> None:
    require_fields(frame, {}, {"nonce": NONCE})
