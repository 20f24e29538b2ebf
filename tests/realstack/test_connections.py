"""MySQL connections of long-lived server processes: idle spells and how many stay open."""

import asyncio
import threading
import time
import urllib.request

import pytest
from django.conf import settings
from django.db import close_old_connections, connections, transaction

from messaging.models import RoomSequence
from rooms.actions import create_room
from messaging.sharding import shard_for_room
from tests.realstack.stack import (
    Client,
    add_members,
    close_clients,
    make_users,
    mysql_connections_of,
    mysql_url,
    open_clients,
    session_key_for,
)

pytestmark = [pytest.mark.realstack, pytest.mark.django_db(transaction=True, databases="__all__")]

IDLE_TIMEOUT = "init_command=SET SESSION wait_timeout=2"


def with_option(url: str, option: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{option.replace(' ', '%20')}"


def rooms_on_both_shards(owner, members) -> list:
    rooms = {}
    index = 0
    while len(rooms) < len(settings.MESSAGE_SHARDS):
        room = create_room(owner, f"conn {index}")
        add_members(room, members)
        rooms.setdefault(shard_for_room(room.pk), room)
        index += 1
    return list(rooms.values())


def test_transaction_after_idle_spell():
    # With CONN_HEALTH_CHECKS, Django pings a reused connection before the
    # SET autocommit=0 that opens a transaction; without it this fails
    # with "server has gone away".
    for alias in ["default", *settings.MESSAGE_SHARDS]:
        with connections[alias].cursor() as cursor:
            cursor.execute("SET SESSION wait_timeout = 1")
    time.sleep(2.5)
    close_old_connections()

    for alias in settings.MESSAGE_SHARDS:
        with transaction.atomic(using=alias):
            assert RoomSequence.objects.using(alias).filter(room_id=1).count() == 0
    with transaction.atomic():
        assert connections["default"].cursor() is not None


def test_server_survives_idle_spell(make_user, servers):
    owner = make_user("owner")
    rooms = rooms_on_both_shards(owner, [])
    key = session_key_for(owner)
    server = servers.start(
        DATABASE_URL=with_option(mysql_url("default"), IDLE_TIMEOUT),
        MESSAGE_SHARD_URLS=",".join(with_option(mysql_url(alias), IDLE_TIMEOUT) for alias in settings.MESSAGE_SHARDS),
    )

    async def talk():
        client = await Client.open(server, key)
        first = [await client.send_message(room.pk, "before the idle spell", f"before-{room.pk}") for room in rooms]
        await asyncio.sleep(3.5)
        second = [await client.send_message(room.pk, "after the idle spell", f"after-{room.pk}") for room in rooms]
        synced = [await client.sync(room.pk, 0) for room in rooms]
        await client.close()
        return first, second, synced

    first, second, synced = asyncio.run(talk())

    assert [frame["type"] for frame in first + second] == ["message.ack"] * (2 * len(rooms))
    assert [[message["seq"] for message in messages] for messages in synced] == [[1, 2]] * len(rooms)
    log = server.log_tail(200_000)
    assert "gone away" not in log
    assert "Lost connection" not in log


class ConnectionSampler(threading.Thread):
    """Sample a process's MySQL connection count every 50 ms until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[int] = []
        self.stop_event = threading.Event()

    def run(self):
        try:
            while not self.stop_event.is_set():
                try:
                    self.samples.append(mysql_connections_of(self.pid))
                except FileNotFoundError:
                    return  # the server exited; the test reports why
                time.sleep(0.05)
        finally:
            connections.close_all()


def test_connections_bounded(make_user, servers):
    owner = make_user("owner")
    users = make_users("load", 40)
    rooms = rooms_on_both_shards(owner, users)
    keys = [session_key_for(user) for user in users]
    server = servers.start()

    sampler = ConnectionSampler(server.pid)
    sampler.start()

    async def load():
        clients = await open_clients(server, [*keys, *keys])
        # Every socket sends three messages to each room, all at once.
        sends = [
            client.send_message(room.pk, f"load {number}", f"c{index}-{room.pk}-{number}", timeout=60)
            for index, client in enumerate(clients)
            for room in rooms
            for number in range(3)
        ]
        results = await asyncio.gather(*sends)
        await close_clients(clients)
        return results

    results = asyncio.run(load())
    sampler.stop_event.set()
    sampler.join(10)
    websocket_peak = max(sampler.samples)

    # Twenty page loads at once use request threads with connections of
    # their own; those must be closed when each request ends.
    def get_page(room_id: int) -> int:
        request = urllib.request.Request(
            f"{server.url}/rooms/{room_id}/", headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={keys[0]}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status

    statuses = []
    threads = [threading.Thread(target=lambda room_id=rooms[i % 2].pk: statuses.append(get_page(room_id))) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    time.sleep(0.5)
    after_pages = mysql_connections_of(server.pid)

    assert len(results) == 80 * 2 * 3
    assert {frame["type"] for frame in results} <= {"message.ack", "error"}
    acked = sum(frame["type"] == "message.ack" for frame in results)
    # The per-socket rate limit may reject some frames; most must pass.
    assert acked >= len(results) // 2
    assert statuses == [200] * 20
    # At most one connection per database for each thread of the sockets'
    # database pool (which also reads the session and user at the
    # handshake), and none left over from the page requests.
    aliases = 1 + len(settings.MESSAGE_SHARDS)
    bound = settings.CHAT_DB_THREADS * aliases
    assert 1 <= websocket_peak <= bound, sampler.samples
    assert after_pages <= bound
