from django.contrib import admin
from django.db.models import Count

from rooms.actions import notify_joined, notify_left
from rooms.models import Membership, Room


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)
    fields = ("user", "role", "joined_at")
    readonly_fields = ("joined_at",)


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "topic", "member_count", "created_by", "created_at")
    list_filter = ("kind",)
    search_fields = ("name", "topic")
    readonly_fields = ("created_at",)
    fields = ("name", "kind", "topic", "created_by", "created_at")
    autocomplete_fields = ("created_by",)
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_total=Count("memberships"))

    @admin.display(description="members", ordering="member_total")
    def member_count(self, obj):
        return obj.member_total

    def save_formset(self, request, form, formset, change):
        # Admin edits bypass rooms.actions, so tell open sockets here, as
        # the actions do, once the transaction commits.
        super().save_formset(request, form, formset, change)
        if formset.model is not Membership:
            return
        for membership in formset.new_objects:
            notify_joined(membership.user_id, membership.room_id)
        for membership in formset.deleted_objects:
            notify_left(membership.user_id, membership.room_id)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("room", "user", "role", "joined_at")
    list_filter = ("role", "room__kind")
    search_fields = ("room__name", "user__username")
    autocomplete_fields = ("room", "user")

    def save_model(self, request, obj, form, change):
        previous = Membership.objects.filter(pk=obj.pk).values("room_id", "user_id").first() if change else None
        super().save_model(request, obj, form, change)
        if previous and (previous["room_id"], previous["user_id"]) != (obj.room_id, obj.user_id):
            notify_left(previous["user_id"], previous["room_id"])
        if previous is None or (previous["room_id"], previous["user_id"]) != (obj.room_id, obj.user_id):
            notify_joined(obj.user_id, obj.room_id)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        notify_left(obj.user_id, obj.room_id)

    def delete_queryset(self, request, queryset):
        pairs = list(queryset.values_list("user_id", "room_id"))
        super().delete_queryset(request, queryset)
        for user_id, room_id in pairs:
            notify_left(user_id, room_id)
