"""Admin for messages, which live on the message shards.

The change list reads one shard at a time: the room filter picks the
room's shard, and otherwise the shard filter (default: the first shard)
does. A message page finds its message on whichever shard holds the id.
"""

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.utils.translation import gettext_lazy as _

from messaging.models import Message
from messaging.sharding import shard_for_room
from rooms.models import Room

SHARD_PARAM = "shard"
ROOM_PARAM = "room"


def _selected_room_id(params) -> int | None:
    value = params.get(ROOM_PARAM, "")
    return int(value) if isinstance(value, str) and value.isdigit() else None


def selected_shard(params) -> str:
    """Return the shard to list: the selected room's, else the selected one."""
    room_id = _selected_room_id(params)
    if room_id is not None:
        return shard_for_room(room_id)
    alias = params.get(SHARD_PARAM)
    return alias if alias in settings.MESSAGE_SHARDS else settings.MESSAGE_SHARDS[0]


class ShardFilter(admin.SimpleListFilter):
    title = _("shard")
    parameter_name = SHARD_PARAM

    def lookups(self, request, model_admin):
        return [(alias, alias) for alias in settings.MESSAGE_SHARDS]

    def queryset(self, request, queryset):
        # ModelAdmin.get_queryset has already chosen the shard.
        return queryset

    def choices(self, changelist):
        current = selected_shard(changelist.params)
        for alias, title in self.lookup_choices:
            yield {
                "selected": alias == current,
                "query_string": changelist.get_query_string({SHARD_PARAM: alias}, [ROOM_PARAM]),
                "display": title,
            }


class RoomFilter(admin.SimpleListFilter):
    title = _("room")
    parameter_name = ROOM_PARAM

    def lookups(self, request, model_admin):
        # NOTE: lists at most 200 rooms; for more, link here with ?room=<id>.
        return [(str(room.pk), f"{room.name} ({room.pk})") for room in Room.objects.order_by("name")[:200]]

    def queryset(self, request, queryset):
        room_id = _selected_room_id(request.GET)
        return queryset.filter(room_id=room_id) if room_id is not None else queryset


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "room_id", "seq", "author_id", "short_body", "created_at")
    list_filter = (ShardFilter, RoomFilter)
    search_fields = ("body",)
    ordering = ("-id",)
    list_per_page = 100
    show_full_result_count = False
    fields = ("id", "room_id", "seq", "author_id", "body", "client_id", "created_at")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).using(selected_shard(request.GET))

    def get_object(self, request, object_id, from_field=None):
        try:
            message_id = int(object_id)
        except (TypeError, ValueError):
            return None
        # Ids are unique across shards, so the first shard with it is the one.
        for alias in settings.MESSAGE_SHARDS:
            message = Message.objects.using(alias).filter(pk=message_id).first()
            if message is not None:
                return message
        return None

    @admin.display(description=_("body"))
    def short_body(self, message):
        return message.body if len(message.body) <= 80 else message.body[:79] + "…"

    # NOTE: messages are read-only here. Deleting or editing one must also
    # tell the room's open sockets, which needs a moderation action first.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    # Django's admin opens a write transaction on the model's database before
    # it checks permissions, and a message has no database until its room is
    # known; reject writes before that happens.
    def delete_view(self, request, object_id, extra_context=None):
        raise PermissionDenied

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method == "POST":
            raise PermissionDenied
        return super().changeform_view(request, object_id, form_url, extra_context)
