"""Checks that keep an open socket's view of its user current."""

import enum
from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.models import Session
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from rooms.models import Membership

DATABASE_SESSION_ENGINES = (
    "django.contrib.sessions.backends.db",
    "django.contrib.sessions.backends.cached_db",
    "chatproject.sessions",
)


class SocketState(enum.Enum):
    VALID = "valid"
    SESSION_ENDED = "session_ended"
    ACCOUNT_INACTIVE = "account_inactive"


def socket_still_valid(user_id: int, session_key: str | None) -> tuple[SocketState, list[int]]:
    """Return (the socket's state, the user's current room ids)."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return SocketState.ACCOUNT_INACTIVE, []
    if session_key is not None and not _session_alive(user, session_key):
        return SocketState.SESSION_ENDED, []
    return SocketState.VALID, list(Membership.objects.filter(user_id=user_id).values_list("room_id", flat=True))


def _session_alive(user, session_key: str) -> bool:
    # The db and cached_db engines both keep every session in the table;
    # reading it directly sees a deletion that the cache has not, and the
    # expiry date, which SessionStore.exists() ignores.
    if settings.SESSION_ENGINE in DATABASE_SESSION_ENGINES:
        session = Session.objects.filter(session_key=session_key, expire_date__gt=timezone.now()).first()
        data = session.get_decoded() if session is not None else None
    else:
        data = import_module(settings.SESSION_ENGINE).SessionStore(session_key).load() or None
    if not data or str(data.get(SESSION_KEY)) != str(user.pk):
        return False
    # As django.contrib.auth.get_user does: a session made before the last
    # password change no longer authenticates.
    stored_hash = data.get(HASH_SESSION_KEY) or ""
    return constant_time_compare(stored_hash, user.get_session_auth_hash())
