"""Checks that keep an open socket's view of its user current."""

from importlib import import_module

from django.conf import settings
from django.contrib.auth import get_user_model

from rooms.models import Membership


def socket_still_valid(user_id: int, session_key: str | None) -> tuple[bool, list[int]]:
    """Return (session and account still valid, the user's current room ids)."""
    User = get_user_model()
    if not User.objects.filter(pk=user_id, is_active=True).exists():
        return False, []
    if session_key is not None:
        store = import_module(settings.SESSION_ENGINE).SessionStore
        if not store().exists(session_key):
            return False, []
    return True, list(Membership.objects.filter(user_id=user_id).values_list("room_id", flat=True))
