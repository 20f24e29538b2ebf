"""Checks that keep an open socket's view of its user current."""

import enum
from importlib import import_module

from django.conf import settings
from django.contrib.auth import get_user_model

from rooms.models import Membership


class SocketState(enum.Enum):
    VALID = "valid"
    SESSION_ENDED = "session_ended"
    ACCOUNT_INACTIVE = "account_inactive"


def socket_still_valid(user_id: int, session_key: str | None) -> tuple[SocketState, list[int]]:
    """Return (the socket's state, the user's current room ids)."""
    User = get_user_model()
    if not User.objects.filter(pk=user_id, is_active=True).exists():
        return SocketState.ACCOUNT_INACTIVE, []
    if session_key is not None:
        # NOTE: exists() ignores the expiry date; an expired session that
        # has not been cleared yet keeps its sockets open until clearsessions.
        store = import_module(settings.SESSION_ENGINE).SessionStore
        if not store().exists(session_key):
            return SocketState.SESSION_ENDED, []
    return SocketState.VALID, list(Membership.objects.filter(user_id=user_id).values_list("room_id", flat=True))
