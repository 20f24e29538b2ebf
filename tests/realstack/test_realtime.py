"""Delivery over Redis across real daphne processes, and recovery from faults."""

import asyncio
import re
import signal
import time
import urllib.parse
import urllib.request

import pytest
import redis
from websockets.exceptions import ConnectionClosed
from django.conf import settings

from chatproject.databases import redis_db_number
from messaging.models import Message
from messaging.sharding import shard_for_room
from rooms.actions import create_room
from tests.realstack.stack import (
    Client,
    OwnMariaDB,
    add_members,
    close_clients,
    make_users,
    mysql_url,
    open_clients,
    own_redis,
    session_key_for,
)

pytestmark = [pytest.mark.realstack, pytest.mark.django_db(transaction=True, databases="__all__")]


def is_new(message_id: str):
    return lambda frame: frame["type"] == "message.new" and frame["message"]["id"] == message_id


def seen_seqs(client: Client, room_id: int) -> list[int]:
    return [message["seq"] for message in client.new_messages(room_id)]


async def deliver_to_all(sender: Client, receivers, room_id: int, body: str, client_id: str, timeout: float = 60) -> dict:
    ack = await sender.send_message(room_id, body, client_id, timeout)
    assert ack["type"] == "message.ack", ack
    await asyncio.gather(*(client.wait_for(is_new(ack["message"]["id"]), timeout) for client in receivers))
    return ack["message"]


def group_channel(room_id: int, prefix: str) -> str:
    return f"{prefix}__group__room.{room_id}"


# One process, a thousand sockets


def test_thousand_sockets_one_process(many_files, make_user, servers):
    owner = make_user("owner")
    users = make_users("crowd", 100)
    room = create_room(owner, "crowd")
    add_members(room, users)
    keys = [session_key_for(user) for user in users]
    owner_key = session_key_for(owner)
    server = servers.start()

    async def crowd():
        started = time.monotonic()
        clients = await open_clients(server, [key for key in keys for _ in range(10)], concurrency=50, timeout=120)
        opened = time.monotonic() - started
        sender = await Client.open(server, owner_key)
        message = await deliver_to_all(sender, clients, room.pk, "to all 1000 📣", "crowd-1", timeout=90)
        open_count = sum(not client.closed.is_set() for client in clients)
        await close_clients([*clients, sender])
        return clients, message, opened, open_count

    clients, message, opened, open_count = asyncio.run(asyncio.wait_for(crowd(), 300))

    assert len(clients) == 1000
    assert open_count == 1000
    assert all(client.new_messages(room.pk)[-1]["id"] == message["id"] for client in clients)
    assert all(len(client.new_messages(room.pk)) == 1 for client in clients)
    assert opened < 180
    log = server.log_tail(500_000)
    assert "Too many connections" not in log
    assert "Traceback" not in log


# Redis restarted under 50 sockets


def test_redis_restart_recovers(make_user, servers, tmp_path):
    owner = make_user("owner")
    users = make_users("steady", 10)
    room = create_room(owner, "steady")
    add_members(room, users)
    keys = [session_key_for(user) for user in users]
    owner_key = session_key_for(owner)
    redis_url = "redis://127.0.0.1:18391/1"
    prefix = f"chat.db{redis_db_number(redis_url)}."

    with own_redis(tmp_path / "redis") as (start_redis, stop_redis):
        server = servers.start(REDIS_URL=redis_url)
        probe = redis.Redis.from_url(redis_url, socket_timeout=5)

        async def scenario():
            clients = await open_clients(server, [key for key in keys for _ in range(5)])
            sender = await Client.open(server, owner_key)
            await deliver_to_all(sender, clients, room.pk, "before the restart", "r-before")
            subscribers_before = probe.pubsub_numsub(group_channel(room.pk, prefix))[0][1]

            stop_redis()
            down_acks = []
            for number in range(3):
                started = time.monotonic()
                ack = await sender.send_message(room.pk, f"while Redis is down {number}", f"r-down-{number}", 30)
                down_acks.append((ack, time.monotonic() - started))
            start_redis()

            # Delivery must resume by itself: keep sending (bounded) until a
            # message reaches every socket.
            resumed = None
            deadline = time.monotonic() + 45
            attempt = 0
            while resumed is None and time.monotonic() < deadline:
                attempt += 1
                ack = await sender.send_message(room.pk, f"after the restart {attempt}", f"r-after-{attempt}", 30)
                assert ack["type"] == "message.ack", ack
                try:
                    await asyncio.gather(*(client.wait_for(is_new(ack["message"]["id"]), 2) for client in clients))
                    resumed = ack["message"]
                except TimeoutError:
                    continue
            subscribers_after = probe.pubsub_numsub(group_channel(room.pk, prefix))[0][1]
            specific_after = len(probe.pubsub_channels(f"{prefix}specific.*"))
            user_subscribers_after = probe.pubsub_numsub(f"{prefix}__group__user.{users[0].pk}")[0][1]

            synced = []
            for client in clients:
                last_seen = 1  # everyone saw seq 1 before the restart
                synced.append(await client.sync(room.pk, last_seen))
            still_open = sum(not client.closed.is_set() for client in clients)
            await close_clients([*clients, sender])
            await asyncio.sleep(1)
            leftover = probe.pubsub_channels(f"{prefix}*")
            return {
                "clients": clients,
                "down_acks": down_acks,
                "resumed": resumed,
                "synced": synced,
                "subscribers": (subscribers_before, subscribers_after),
                "specific_after": specific_after,
                "user_subscribers_after": user_subscribers_after,
                "still_open": still_open,
                "leftover": leftover,
            }

        outcome = asyncio.run(asyncio.wait_for(scenario(), 240))
        probe.close()

    assert [ack["type"] for ack, _ in outcome["down_acks"]] == ["message.ack"] * 3
    assert max(seconds for _, seconds in outcome["down_acks"]) < 10
    assert outcome["resumed"] is not None, "delivery did not resume within 45 s of Redis coming back"
    assert outcome["still_open"] == 50
    # One subscription per process and group, before and after: nothing
    # subscribed twice, no channel of a closed socket left behind.
    assert outcome["subscribers"] == (1, 1)
    # Sockets have no channels of their own: the hub's one channel carries
    # their users' events too.
    assert outcome["specific_after"] == 0
    assert outcome["user_subscribers_after"] == 1
    # Only the process's room-hub channel outlives the sockets: it is made
    # once per process and kept for its lifetime.
    assert len(outcome["leftover"]) <= 1
    assert all(b"chathub" in channel for channel in outcome["leftover"]), outcome["leftover"]

    stored = list(Message.objects.using(shard_for_room(room.pk)).filter(room_id=room.pk).order_by("seq"))
    assert [message.seq for message in stored] == list(range(1, len(stored) + 1))
    down_ids = {ack["message"]["id"] for ack, _ in outcome["down_acks"]}
    assert down_ids <= {str(message.id) for message in stored}
    for client, synced in zip(outcome["clients"], outcome["synced"]):
        # What a socket heard live plus what sync returned is every message, once each.
        assert [message["seq"] for message in synced] == list(range(2, len(stored) + 1))
        assert set(seen_seqs(client, room.pk)) <= set(range(1, len(stored) + 1))
        assert len(seen_seqs(client, room.pk)) == len(set(seen_seqs(client, room.pk)))


# Three processes sharing MariaDB and Redis


def post_form(server, path: str, session_key: str, fields: dict) -> int:
    """POST a form like a browser: fetch the CSRF cookie and token first; return the final status."""
    cookie = f"{settings.SESSION_COOKIE_NAME}={session_key}"
    with urllib.request.urlopen(
        urllib.request.Request(f"{server.url}/", headers={"Cookie": cookie}), timeout=20
    ) as response:
        page = response.read().decode()
        csrf_cookie = re.search(r"csrftoken=([^;]+)", response.headers.get("Set-Cookie", ""))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert csrf_cookie and token, "the page has no CSRF token"
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token.group(1), **fields}).encode()
    request = urllib.request.Request(
        f"{server.url}{path}", data=data, headers={"Cookie": f"{cookie}; csrftoken={csrf_cookie.group(1)}"}
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.status


def test_three_processes_share_events(make_user, servers):
    alice, bob, carol, dave = (make_user(name) for name in ("alice", "bob", "carol", "dave"))
    room = create_room(alice, "shared")
    add_members(room, [bob, carol])
    a, b, c = servers.start(), servers.start(), servers.start()
    assert len({a.port, b.port, c.port}) == 3
    keys = {user.username: session_key_for(user) for user in (alice, bob, carol, dave)}

    async def scenario():
        on_a = await Client.open(a, keys["alice"])
        on_b = await Client.open(b, keys["bob"])
        on_c = await Client.open(c, keys["carol"])
        dave_on_c = await Client.open(c, keys["dave"])
        first = await deliver_to_all(on_a, [on_a, on_b, on_c], room.pk, "from A", "a-1")

        # alice adds dave through process A's page; dave's socket on C
        # must hear of it and then get the room's messages.
        status = await asyncio.to_thread(post_form, a, f"/rooms/{room.pk}/members/", keys["alice"], {"username": "dave"})
        joined = await dave_on_c.wait_for(lambda frame: frame["type"] == "room.joined", 15)
        second = await deliver_to_all(on_b, [on_a, on_b, on_c, dave_on_c], room.pk, "from B", "b-1")
        await close_clients([on_a, on_b, on_c, dave_on_c])
        return first, status, joined, second, dave_on_c

    first, status, joined, second, dave_on_c = asyncio.run(asyncio.wait_for(scenario(), 120))

    assert first["seq"] == 1
    assert status == 200
    assert joined["room"]["id"] == room.pk
    assert joined["room"]["last_seq"] == 1
    assert second["seq"] == 2
    assert seen_seqs(dave_on_c, room.pk) == [2]


# A server process killed and restarted


def test_sigkill_restart_loses_nothing(make_user, servers):
    users = make_users("crash", 6)
    room = create_room(users[0], "crash")
    add_members(room, users[1:])
    keys = [session_key_for(user) for user in users]
    server = servers.start()
    per_client = 12

    async def run_client(
        index: int, key: str, crashed: asyncio.Event, restarted: asyncio.Event, all_sent: asyncio.Barrier
    ) -> dict:
        """Send per_client messages; on a lost socket reconnect, resend what was not acked, and sync."""
        client = await Client.open(server, key)
        acked: dict[str, dict] = {}
        pending = [f"k{index}-{number}" for number in range(per_client)]
        reconnects = 0
        resumed: list[list[int]] = []

        while pending:
            client_id = pending[0]
            try:
                ack = await client.send_message(room.pk, f"crash test {client_id}", client_id, timeout=5)
            except (ConnectionError, TimeoutError, ConnectionClosed):
                # Resume like the browser client: reconnect, then sync from
                # the last sequence number this socket saw.
                last_seen = max(seen_seqs(client, room.pk), default=0)
                await restarted.wait()
                client = await Client.open(server, key, timeout=30)
                reconnects += 1
                resumed.append([last_seen, *(message["seq"] for message in await client.sync(room.pk, last_seen))])
                continue
            if ack["type"] == "error":
                assert ack["retryable"], ack
                await asyncio.sleep(0.2)
                continue

            acked[client_id] = ack["message"]
            pending.pop(0)
            if index == 0 and len(acked) == per_client // 2:
                crashed.set()
            await asyncio.sleep(0.05)

        # Sync once every client has sent everything; a client that
        # finished early would otherwise miss the others' last messages.
        await all_sent.wait()
        await asyncio.sleep(0.5)
        live = seen_seqs(client, room.pk)
        synced = await client.sync(room.pk, 0)
        await client.close()
        return {"acked": acked, "reconnects": reconnects, "synced": synced, "live": live, "resumed": resumed}

    async def scenario():
        crashed, restarted = asyncio.Event(), asyncio.Event()
        all_sent = asyncio.Barrier(len(keys))
        tasks = [
            asyncio.create_task(run_client(index, key, crashed, restarted, all_sent)) for index, key in enumerate(keys)
        ]
        await asyncio.wait_for(crashed.wait(), 60)
        await asyncio.to_thread(server.restart, signal.SIGKILL)
        restarted.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(asyncio.wait_for(scenario(), 180))

    stored = list(Message.objects.using(shard_for_room(room.pk)).filter(room_id=room.pk).order_by("seq"))
    total = len(users) * per_client
    assert [message.seq for message in stored] == list(range(1, total + 1))
    assert sorted(message.client_id for message in stored) == sorted(
        f"k{index}-{number}" for index in range(len(users)) for number in range(per_client)
    )
    assert sum(result["reconnects"] for result in results) >= len(users) - 1
    for result in results:
        assert len(result["acked"]) == per_client
        assert [message["seq"] for message in result["synced"]] == list(range(1, total + 1))
        assert len(result["live"]) == len(set(result["live"]))
        for last_seen, *recovered in result["resumed"]:
            # The resumed sync continues right after what the socket saw.
            assert recovered == list(range(last_seen + 1, last_seen + 1 + len(recovered)))
        for client_id, message in result["acked"].items():
            assert stored[message["seq"] - 1].client_id == client_id


# A message shard stopped and started again


def test_shard_stopped_and_back(make_user, servers, tmp_path):
    alice = make_user("alice")
    own = OwnMariaDB(tmp_path / "shard1")
    own.install()
    own.start()
    try:
        own.execute("CREATE DATABASE chat_shard1 CHARACTER SET utf8mb4 COLLATE utf8mb4_uca1400_as_ci")
        env = {
            "MESSAGE_SHARD_URLS": f"{mysql_url('shard_0')},mysql://root@127.0.0.1:{own.port}/chat_shard1",
        }
        first = servers.start(**env)
        first.manage("migrate", "--database", "shard_1", "--verbosity", "0")
        rooms = {}
        index = 0
        while len(rooms) < 2:
            room = create_room(alice, f"outage {index}")
            rooms.setdefault(shard_for_room(room.pk), room)
            index += 1
        healthy, doomed = rooms["shard_0"], rooms["shard_1"]
        key = session_key_for(alice)

        async def scenario():
            client = await Client.open(first, key)
            before = [await client.send_message(room.pk, "before", f"before-{room.pk}") for room in (healthy, doomed)]
            own.stop()
            # A socket opened during the outage still connects.
            late = await Client.open(first, key)
            await late.close()
            during_doomed = await client.send_message(doomed.pk, "during", "during-doomed", 20)
            during_healthy = await client.send_message(healthy.pk, "during", "during-healthy", 20)
            own.start()
            after = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                after = await client.send_message(doomed.pk, "after", "after-doomed", 20)
                if after["type"] == "message.ack":
                    break
                await asyncio.sleep(0.5)
            synced = await client.sync(doomed.pk, 0)
            await client.close()
            return before, late.hello, during_doomed, during_healthy, after, synced

        before, late_hello, during_doomed, during_healthy, after, synced = asyncio.run(asyncio.wait_for(scenario(), 120))
    finally:
        own.stop()

    assert [frame["type"] for frame in before] == ["message.ack", "message.ack"]
    last_seqs = {room["id"]: room["last_seq"] for room in late_hello["rooms"]}
    assert last_seqs[healthy.pk] == 1
    assert last_seqs[doomed.pk] is None
    assert during_doomed["type"] == "error"
    assert during_doomed["code"] == "shard_unavailable"
    assert during_doomed["retryable"] is True
    assert during_healthy["type"] == "message.ack"
    assert during_healthy["message"]["seq"] == 2
    assert after["type"] == "message.ack"
    assert after["message"]["seq"] == 2
    assert [message["client_id"] for message in synced] == [f"before-{doomed.pk}", "after-doomed"]
