"""Database router that keeps message-side models on the message shards.

Only the models listed in SHARD_MODELS live on the shards; for every other
model the router returns None and Django uses "default". Callers choose the
shard themselves (messaging.sharding.shard_for_room) and pass it with
``.using(alias)``; the router then only has to honour the instance hint.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SHARD_MODELS = frozenset({"messaging.message", "messaging.roomsequence"})


def is_shard_model(model) -> bool:
    return model._meta.label_lower in SHARD_MODELS


class MessageShardRouter:
    def _shard_from_hints(self, model, hints):
        instance = hints.get("instance")
        if instance is not None and instance._state.db:
            return instance._state.db
        room_id = hints.get("room_id")
        if room_id is not None:
            from messaging.sharding import shard_for_room

            return shard_for_room(room_id)
        raise ImproperlyConfigured(
            f"{model._meta.label} lives on the message shards: query it with "
            f".using(shard_for_room(room_id)) or pass a room_id hint."
        )

    def db_for_read(self, model, **hints):
        if not is_shard_model(model):
            return None
        return self._shard_from_hints(model, hints)

    def db_for_write(self, model, **hints):
        if not is_shard_model(model):
            return None
        return self._shard_from_hints(model, hints)

    def allow_relation(self, obj1, obj2, **hints):
        # Instances, not type(obj): request.user is a lazy proxy whose type
        # is not the model class.
        if is_shard_model(obj1) or is_shard_model(obj2):
            return obj1._state.db == obj2._state.db
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        on_shard = db in settings.MESSAGE_SHARDS
        if model_name is None:
            # RunPython and RunSQL without a model: main database only.
            return not on_shard
        return (f"{app_label}.{model_name}" in SHARD_MODELS) == on_shard
