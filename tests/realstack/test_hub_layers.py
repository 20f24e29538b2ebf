"""The room hub receives every event on each Redis channel layer."""

import asyncio

import pytest
from django.conf import settings
from django.utils.module_loading import import_string

from chatproject.databases import build_channel_layer
from chatproject.realtime import room_group
from messaging.fanout import RoomHub

BACKENDS = ["channels_redis.core.RedisChannelLayer", "channels_redis.pubsub.RedisPubSubChannelLayer"]


class FakeSocket:
    """Stands in for a consumer: records the texts the hub delivers."""

    def __init__(self):
        self.texts: list[str] = []

    async def deliver_room_text(self, text: str) -> None:
        self.texts.append(text)


@pytest.mark.parametrize("backend", BACKENDS, ids=["core", "pubsub"])
def test_hub_receives_every_event(backend):
    config = build_channel_layer(backend, settings.REDIS_URL, 50, 15)
    config["CONFIG"]["prefix"] = f"hubtest.{backend.rsplit('.', 1)[-1]}."
    layer = import_string(config["BACKEND"])(**config["CONFIG"])

    async def scenario():
        hub = RoomHub(layer)
        sockets = [FakeSocket(), FakeSocket()]
        for socket in sockets:
            await hub.subscribe(socket, 7)
        # A socket's own channel waiting at the same time, as in a server:
        # the core layer once starved the hub behind it.
        own_channel = await layer.new_channel()
        waiting = asyncio.create_task(layer.receive(own_channel))
        await asyncio.sleep(0.2)

        for number in range(20):
            await layer.group_send(room_group(7), {"type": "chat.frame", "room": 7, "text": f"m{number}"})
        for _ in range(100):
            if all(len(socket.texts) == 20 for socket in sockets):
                break
            await asyncio.sleep(0.05)

        waiting.cancel()
        for task in hub._tasks:
            task.cancel()
        await layer.group_discard(room_group(7), hub.channel_name)
        return [socket.texts for socket in sockets]

    texts = asyncio.run(scenario())

    expected = [f"m{number}" for number in range(20)]
    assert texts == [expected, expected]
