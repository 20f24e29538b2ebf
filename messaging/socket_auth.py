"""Who a WebSocket handshake belongs to, read in the socket's first database hop.

Channels' AuthMiddlewareStack would read the session and the user in a hop
of its own, on one thread shared by the whole process, and wrap every frame
the socket sends to save a session that a socket never changes. The chat
consumer instead reads the session cookie itself and resolves it with
Django's own get_user. The checks are therefore the same as for a page
request: expiry, the account being active, and the session hash that a
password change invalidates.
"""

from dataclasses import dataclass
from importlib import import_module

from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.http.cookie import parse_cookie

from rooms.models import Membership


def session_key_from_scope(scope) -> str | None:
    """Return the session cookie of a handshake, or None."""
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            return parse_cookie(value.decode("latin1")).get(settings.SESSION_COOKIE_NAME) or None
    return None


class _SessionRequest:
    """The one attribute of an HttpRequest that auth.get_user reads."""

    def __init__(self, session):
        self.session = session


def user_for_session(session_key: str | None):
    """Return the active user a session key signs in, or None."""
    if not session_key:
        return None
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = auth.get_user(_SessionRequest(session))
    if session.modified and session.session_key is not None:
        # get_user moves a session signed with a fallback secret to the
        # current one; keep that, as a page request would.
        session.save()
    if not user.is_authenticated or not user.is_active:
        return None
    return user


@dataclass(frozen=True, slots=True)
class SocketUser:
    """What an open socket keeps of its user: a tenth of a model instance's memory.

    It provides what the actions read from an author (pk, public_dict). The
    socket takes a new one when the user's name changes (the
    user.renamed event) and re-checks the account on revalidation.
    """

    pk: int
    username: str
    display_name: str

    is_authenticated = True
    is_active = True

    @classmethod
    def of(cls, user) -> "SocketUser":
        return cls(user.pk, user.username, user.display_name)

    def get_display_name(self) -> str:
        return self.display_name or self.username

    def public_dict(self) -> dict:
        return {"id": self.pk, "username": self.username, "display_name": self.get_display_name()}


def open_socket(session_key: str | None):
    """Return (user, ids of the user's rooms) for a handshake, or None to reject it."""
    user = user_for_session(session_key)
    if user is None:
        return None
    room_ids = set(Membership.objects.filter(user_id=user.pk).values_list("room_id", flat=True))
    return SocketUser.of(user), room_ids


def reload_socket_user(user_id: int) -> SocketUser | None:
    """Return a fresh SocketUser for an active account, or None."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    return SocketUser.of(user) if user is not None else None
