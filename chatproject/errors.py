"""One error vocabulary for pages, the REST API and WebSocket frames.

Actions raise ChatError subclasses; the consumer turns them into
{"type": "error", "code": ..., "detail": ...} frames and the REST API into
responses with the same code and detail, so clients see one set of codes.
"""

from django.utils.translation import gettext_lazy as _


class ChatError(Exception):
    code = "error"
    status = 400
    default_detail = _("The request failed.")
    # A retryable error leaves nothing behind: the client may send the same
    # frame again later and expect it to succeed.
    retryable = False

    def __init__(self, detail=None, **extra):
        self.detail = str(detail if detail is not None else self.default_detail)
        self.extra = extra
        super().__init__(self.detail)

    def as_dict(self) -> dict:
        return {"code": self.code, "detail": self.detail, "retryable": self.retryable, **self.extra}


class InvalidInput(ChatError):
    code = "invalid_input"
    default_detail = _("The input is invalid.")


class BodyEmpty(ChatError):
    code = "empty_body"
    default_detail = _("The message body is empty.")


class BodyTooLong(ChatError):
    code = "too_long"
    default_detail = _("The message body is too long.")


class ClientIdReused(ChatError):
    code = "client_id_reused"
    status = 409
    default_detail = _("This client_id was already used for a different message.")


class NotMember(ChatError):
    code = "not_member"
    status = 403
    default_detail = _("You are not a member of this room.")


class RoomNotFound(ChatError):
    code = "room_not_found"
    status = 404
    default_detail = _("Room not found.")


class Forbidden(ChatError):
    code = "forbidden"
    status = 403
    default_detail = _("You do not have permission to do this.")


class Conflict(ChatError):
    code = "conflict"
    status = 409
    default_detail = _("The request conflicts with the current state.")


class ShardUnavailable(ChatError):
    code = "shard_unavailable"
    status = 503
    retryable = True
    default_detail = _("Messages of this room are temporarily unavailable; try again shortly.")


class RateLimited(ChatError):
    code = "rate_limited"
    status = 429
    retryable = True
    default_detail = _("Too many requests; slow down.")


class InternalError(ChatError):
    code = "internal_error"
    status = 500
    retryable = True
    default_detail = _("The server failed to handle this request.")
