from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    """A person with an account; `display_name` is what other people see."""

    display_name = models.CharField(_("display name"), max_length=80, blank=True)

    def save(self, *args, **kwargs):
        # set_password() leaves the new password in _password until save;
        # after it, every session made with the old password is invalid.
        password_changed = self._password is not None and self.pk is not None
        # Skip the extra read for saves that cannot touch a name, such as
        # the last_login update on every log-in.
        update_fields = kwargs.get("update_fields")
        may_rename = update_fields is None or {"display_name", "username"} & set(update_fields)
        name_changed = bool(may_rename) and self.pk is not None and self._state.db is not None and self._display_name_changed()
        super().save(*args, **kwargs)
        if name_changed:
            from chatproject.realtime import publish_to_user
            from messaging.queries import bump_authors_version

            # Cached history pages embed author names, and so do the
            # messages that this user's open sockets send.
            bump_authors_version()
            publish_to_user(self.pk, {"type": "user.renamed"}, using="default")
        if password_changed:
            from chatproject.realtime import publish_to_user

            publish_to_user(self.pk, {"type": "user.credentials_changed"}, using="default")

    def _display_name_changed(self) -> bool:
        stored = type(self).objects.filter(pk=self.pk).values_list("display_name", "username").first()
        return stored is not None and stored != (self.display_name, self.username)

    def get_display_name(self) -> str:
        return self.display_name or self.username

    def public_dict(self) -> dict:
        """Return the author shape used in message and hello frames."""
        return {"id": self.pk, "username": self.username, "display_name": self.get_display_name()}
