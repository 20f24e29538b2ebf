"""Close a user's open sockets when they log out or lose their account."""

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from chatproject.realtime import publish_to_user


@receiver(user_logged_out)
def close_sockets_of_session(sender, request, user, **kwargs):
    if user is None or request is None:
        return
    session_key = request.session.session_key
    if session_key:
        publish_to_user(user.pk, {"type": "session.ended", "session_key": session_key})


@receiver(post_save, sender=get_user_model())
def close_sockets_of_inactive_user(sender, instance, created, **kwargs):
    if not created and not instance.is_active:
        publish_to_user(instance.pk, {"type": "user.deactivated"}, using="default")


@receiver(post_delete, sender=get_user_model())
def close_sockets_of_deleted_user(sender, instance, **kwargs):
    publish_to_user(instance.pk, {"type": "user.deactivated"}, using="default")
