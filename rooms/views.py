"""Server-rendered room pages and the form POSTs behind their buttons.

Every write goes through rooms.actions or messaging.actions and every room
lookup through rooms.access, so a page obeys the same rules as the API and
the WebSocket. A ChatError from an action reaches the person as a form
error or a flash message; RoomNotFound becomes a 404 and Forbidden or
NotMember a 403, never a 500.
"""

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import DatabaseError
from django.db.models import Case, Count, IntegerField, Value, When
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from chatproject.errors import ChatError, InvalidInput
from messaging.actions import send_message
from messaging.queries import RECENT_PAGE_SIZE, messages_before, recent_page
from rooms.access import access_room_for_viewer
from rooms.actions import add_member, create_room, join_room, leave_room, open_direct_room, remove_member
from rooms.forms import CreateRoomForm, MessageForm, UsernameForm
from rooms.models import Membership, Room

# Routed in chatproject.asgi, outside Django's URLconf.
WEBSOCKET_PATH = "/ws/"
DIRECTORY_PAGE_SIZE = 50
# The member list shows this many, owners and admins first; a room with
# more shows the total beside it.
MEMBER_LIST_LIMIT = 200

ROLE_ORDER = Case(
    When(role=Membership.Role.OWNER, then=Value(0)),
    When(role=Membership.Role.ADMIN, then=Value(1)),
    default=Value(2),
    output_field=IntegerField(),
)

logger = logging.getLogger(__name__)


def _raise_if_denied(error: ChatError) -> None:
    """Turn a not-found or forbidden ChatError into Django's 404 or 403."""
    if error.status == 404:
        raise Http404(error.detail)
    if error.status == 403:
        raise PermissionDenied(error.detail)


def _viewable_room(user, room_id) -> tuple[Room, Membership | None]:
    try:
        return access_room_for_viewer(user, room_id)
    except ChatError as error:
        _raise_if_denied(error)
        raise


def _add_form_error(form, error: ChatError) -> None:
    field = error.extra.get("field")
    form.add_error(field if field in form.fields else None, error.detail)


def _direct_partners(user, room_ids) -> dict[int, str]:
    """Return {direct room id: the other people's display names}."""
    others = (
        Membership.objects.filter(room_id__in=list(room_ids))
        .exclude(user_id=user.pk)
        .select_related("user")
        .order_by("user__username")
    )
    names: dict[int, list[str]] = {}
    for membership in others:
        names.setdefault(membership.room_id, []).append(membership.user.get_display_name())
    return {room_id: ", ".join(people) for room_id, people in names.items()}


def _room_title(room: Room, partners: dict[int, str]) -> str:
    if room.kind == Room.Kind.DIRECT:
        return partners.get(room.pk) or room.name
    return room.name


def _with_times(page: list[dict]) -> None:
    """Add the datetime the template formats beside each message's ISO string."""
    for message in page:
        message["created"] = parse_datetime(message["created_at"])


@login_required
def my_rooms(request):
    memberships = list(
        Membership.objects.filter(user=request.user).select_related("room").order_by("room__name", "room_id")
    )
    partners = _direct_partners(
        request.user, [membership.room_id for membership in memberships if membership.room.kind == Room.Kind.DIRECT]
    )
    for membership in memberships:
        membership.title = _room_title(membership.room, partners)
    return render(request, "rooms/mine.html", {"memberships": memberships})


@login_required
def directory(request):
    rooms = (
        Room.objects.filter(kind=Room.Kind.PUBLIC).annotate(member_count=Count("memberships")).order_by("name", "id")
    )
    page = Paginator(rooms, DIRECTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    joined = set(
        Membership.objects.filter(user=request.user, room_id__in=[room.pk for room in page]).values_list(
            "room_id", flat=True
        )
    )
    for room in page:
        room.is_member = room.pk in joined
    return render(request, "rooms/directory.html", {"page": page})


@login_required
def create(request):
    form = CreateRoomForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            room = create_room(
                request.user, form.cleaned_data["name"], form.cleaned_data["kind"], form.cleaned_data["topic"]
            )
        except ChatError as error:
            _raise_if_denied(error)
            _add_form_error(form, error)
        else:
            return redirect("rooms:detail", room.pk)
    return render(request, "rooms/create.html", {"form": form})


def _parse_before(value) -> int | None:
    try:
        before = int(value)
    except (TypeError, ValueError):
        return None
    return before if before > 0 else None


def _render_room(request, room, membership, before=None, body="", client_id=None, send_error=None):
    try:
        if before is None:
            page, has_older = recent_page(room.pk, RECENT_PAGE_SIZE)
        else:
            page, has_older = messages_before(room.pk, before, RECENT_PAGE_SIZE)
    except DatabaseError:
        # The room's shard is down, so show the page without history. The
        # live script syncs the messages once the shard is back.
        logger.warning("History of room %s is unavailable", room.pk, exc_info=True)
        messages.error(request, _("This room's messages are temporarily unavailable; try again shortly."))
        page, has_older = [], False
    _with_times(page)
    is_direct = room.kind == Room.Kind.DIRECT
    partners = _direct_partners(request.user, [room.pk]) if is_direct else {}
    # Only the newest page of a member's room is live: an older page would
    # have to sync every message after it to stay in order.
    live = membership is not None and before is None
    last_seq = page[-1]["seq"] if page else 0
    context = {
        "room": room,
        "title": _room_title(room, partners),
        "membership": membership,
        "messages_page": page,
        "older_before": page[0]["seq"] if has_older and page else None,
        "is_archive": before is not None,
        "live": live,
        "member_count": room.memberships.count(),
        "can_manage": membership is not None and membership.can_manage and not is_direct,
        "can_leave": membership is not None and not is_direct,
        "body": body,
        "client_id": client_id or MessageForm.new_client_id(),
        "send_error": send_error,
        "room_config": {
            "room": room.pk,
            "wsPath": WEBSOCKET_PATH,
            "lastSeq": last_seq,
            "live": live,
            "me": {"id": request.user.pk, "displayName": request.user.get_display_name()},
            "strings": _client_strings(),
        },
    }
    if membership is not None:
        members = list(
            Membership.objects.filter(room=room)
            .select_related("user")
            .order_by(ROLE_ORDER, "user__display_name", "user__username")[:MEMBER_LIST_LIMIT]
        )
        is_owner = membership.role == Membership.Role.OWNER
        for member in members:
            # Mirrors rooms.actions.remove_member, which has the last word.
            member.removable = (
                context["can_manage"] and member.user_id != request.user.pk and (is_owner or not member.can_manage)
            )
        context["members"] = members
    return render(request, "rooms/detail.html", context)


def _client_strings() -> dict[str, str]:
    """Words room.js shows, translated here so the script carries none."""
    return {
        "connecting": _("Connecting…"),
        "connected": _("Connected"),
        "reconnecting": _("Reconnecting…"),
        "loggedOut": _("Signed out: log in again to keep chatting."),
        "sending": _("Sending…"),
        "notSent": _("Not sent"),
        "notMember": _("You are no longer a member of this room."),
        "unknownError": _("Something went wrong; try again."),
    }


@login_required
def detail(request, room_id):
    room, membership = _viewable_room(request.user, room_id)
    return _render_room(request, room, membership, before=_parse_before(request.GET.get("before")))


@login_required
@require_POST
def send(request, room_id):
    """Send from the plain form, for browsers without JavaScript."""
    room, membership = _viewable_room(request.user, room_id)
    form = MessageForm(request.POST)
    body, client_id = request.POST.get("body", ""), request.POST.get("client_id", "")
    try:
        if not form.is_valid():
            # Both fields are optional, so only text no database can store
            # (a NUL character) ends up here; send_message checks the rest.
            raise InvalidInput(" ".join(message for errors in form.errors.values() for message in errors))
        send_message(request.user, room.pk, form.cleaned_data["body"], form.cleaned_data["client_id"])
    except ChatError as error:
        _raise_if_denied(error)
        # A retryable error stored nothing, so the same client_id may be
        # sent again. Any other error needs a changed body, and a changed
        # body is a new message with a new client_id.
        return _render_room(
            request,
            room,
            membership,
            body=body,
            client_id=client_id if error.retryable else None,
            send_error=error.detail,
        )
    return redirect(reverse("rooms:detail", args=[room.pk]) + "#send-form")


@login_required
@require_POST
def join(request, room_id):
    try:
        join_room(request.user, room_id)
    except ChatError as error:
        _raise_if_denied(error)
        messages.error(request, error.detail)
        return redirect("rooms:directory")
    return redirect("rooms:detail", room_id)


@login_required
@require_POST
def leave(request, room_id):
    room, membership = _viewable_room(request.user, room_id)
    if membership is None:
        messages.info(request, _("You are not a member of %(name)s.") % {"name": room.name})
        return redirect("rooms:mine")
    try:
        leave_room(request.user, room.pk)
    except ChatError as error:
        _raise_if_denied(error)
        messages.error(request, error.detail)
        return redirect("rooms:detail", room.pk)
    messages.success(request, _("You left %(name)s.") % {"name": room.name})
    return redirect("rooms:mine")


@login_required
@require_POST
def add(request, room_id):
    room, _membership = _viewable_room(request.user, room_id)
    form = UsernameForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Type the username of the person to add."))
        return redirect("rooms:detail", room.pk)
    try:
        added = add_member(request.user, room.pk, form.cleaned_data["username"])
    except ChatError as error:
        _raise_if_denied(error)
        messages.error(request, error.detail)
    else:
        messages.success(
            request, _("%(name)s is a member of this room.") % {"name": added.user.get_display_name()}
        )
    return redirect("rooms:detail", room.pk)


@login_required
@require_POST
def remove(request, room_id, user_id):
    room, _membership = _viewable_room(request.user, room_id)
    try:
        remove_member(request.user, room.pk, user_id)
    except ChatError as error:
        _raise_if_denied(error)
        messages.error(request, error.detail)
    return redirect("rooms:detail", room.pk)


@login_required
@require_POST
def open_direct(request):
    form = UsernameForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Type the username of the person to write to."))
        return redirect("rooms:mine")
    try:
        room = open_direct_room(request.user, form.cleaned_data["username"])
    except ChatError as error:
        _raise_if_denied(error)
        messages.error(request, error.detail)
        return redirect("rooms:mine")
    return redirect("rooms:detail", room.pk)
