"""Checks that keep an open socket's view of its user current."""

import enum
from importlib import import_module

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.utils import timezone

from rooms.models import Membership

DATABASE_SESSION_ENGINES = ("django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cached_db")


class SocketState(enum.Enum):
    VALID = "valid"
    SESSION_ENDED = "session_ended"
    ACCOUNT_INACTIVE = "account_inactive"


def socket_still_valid(user_id: int, session_key: str | None) -> tuple[SocketState, list[int]]:
    """Return (the socket's state, the user's current room ids)."""
    User = get_user_model()
    if not User.objects.filter(pk=user_id, is_active=True).exists():
        return SocketState.ACCOUNT_INACTIVE, []
    if session_key is not None and not _session_alive(session_key):
        return SocketState.SESSION_ENDED, []
    return SocketState.VALID, list(Membership.objects.filter(user_id=user_id).values_list("room_id", flat=True))


def _session_alive(session_key: str) -> bool:
    # The db and cached_db engines both keep every session in the table;
    # reading it directly sees a deletion that the cache has not, and the
    # expiry date, which SessionStore.exists() ignores.
    if settings.SESSION_ENGINE in DATABASE_SESSION_ENGINES:
        return Session.objects.filter(session_key=session_key, expire_date__gt=timezone.now()).exists()
    store = import_module(settings.SESSION_ENGINE).SessionStore
    return store().exists(session_key)
