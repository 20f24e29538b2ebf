from django.urls import path

from rooms import views

app_name = "rooms"

urlpatterns = [
    path("", views.my_rooms, name="mine"),
    path("rooms/directory/", views.directory, name="directory"),
    path("rooms/new/", views.create, name="create"),
    path("rooms/direct/", views.open_direct, name="open_direct"),
    path("rooms/<int:room_id>/", views.detail, name="detail"),
    path("rooms/<int:room_id>/messages/", views.send, name="send"),
    path("rooms/<int:room_id>/join/", views.join, name="join"),
    path("rooms/<int:room_id>/leave/", views.leave, name="leave"),
    path("rooms/<int:room_id>/members/", views.add, name="add_member"),
    path("rooms/<int:room_id>/members/<int:user_id>/remove/", views.remove, name="remove_member"),
]
