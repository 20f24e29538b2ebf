"""Compare the two Redis channel layers on one daphne process (a measurement, not a test).

    .venv/bin/python tests/realstack/measure_layers.py [--sockets 1000] [--messages 20]

For each of channels_redis.core.RedisChannelLayer and
channels_redis.pubsub.RedisPubSubChannelLayer it starts daphne on
127.0.0.1, opens SOCKETS WebSockets of users who are all members of one
room, sends MESSAGES messages one after another and times how long each
takes to reach every socket. It uses its own databases (chat_measure_*) on
the MariaDB of MEASURE_MYSQL (default root@127.0.0.1:3306) and Redis
database 3 of MEASURE_REDIS (default 127.0.0.1:6379), which it empties
first. Every loop is bounded in count and time.
"""

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

MYSQL = os.environ.get("MEASURE_MYSQL", "root@127.0.0.1:3306")
REDIS = os.environ.get("MEASURE_REDIS", "127.0.0.1:6379")
NAMES = ("chat_measure_main", "chat_measure_shard0", "chat_measure_shard1")
BACKENDS = ("channels_redis.core.RedisChannelLayer", "channels_redis.pubsub.RedisPubSubChannelLayer")
SECRET = "measurement-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"


def configure() -> None:
    os.environ.update(
        {
            "DATABASE_URL": f"mysql://{MYSQL}/{NAMES[0]}",
            "MESSAGE_SHARD_URLS": ",".join(f"mysql://{MYSQL}/{name}" for name in NAMES[1:]),
            "REDIS_URL": f"redis://{REDIS}/3",
            "DJANGO_SECRET_KEY": SECRET,
            "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1",
            "DJANGO_SETTINGS_MODULE": "chatproject.settings",
            "LOG_LEVEL": "WARNING",
        }
    )


def prepare(sockets: int):
    """Create the databases, users, one room and a session per socket; return (room id, session keys)."""
    import MySQLdb
    import django
    import redis

    user_host, port = MYSQL.rsplit(":", 1)
    user, host = user_host.split("@")
    connection = MySQLdb.connect(host=host, port=int(port), user=user)
    for name in NAMES:
        connection.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        connection.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_uca1400_as_ci")
    connection.close()
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()

    django.setup()
    from django.core.management import call_command

    from rooms.actions import create_room
    from tests.realstack.stack import add_members, make_users, session_key_for

    call_command("migrate_all", verbosity=0)
    users = make_users("measure", sockets)
    room = create_room(users[0], "measured")
    add_members(room, users[1:])
    return room.pk, [session_key_for(user) for user in users]


def redis_clients() -> int:
    import redis

    return sum(1 for client in redis.Redis.from_url(os.environ["REDIS_URL"]).client_list() if client.get("db") == "3")


async def run_backend(backend: str, room_id: int, keys: list[str], messages: int) -> dict:
    from tests.realstack.stack import close_clients, open_clients
    from tests.servers import ChatServer

    server = ChatServer(port=18399, data_dir=Path(tempfile.mkdtemp(prefix="measure-")), env={
        name: os.environ[name]
        for name in ("DATABASE_URL", "MESSAGE_SHARD_URLS", "REDIS_URL", "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "LOG_LEVEL")
    } | {"CHANNEL_LAYER_BACKEND": backend, "DJANGO_SECURE_COOKIES": "false"})
    server.start()
    try:
        started = time.monotonic()
        clients = await open_clients(server, keys, concurrency=50, timeout=120)
        connect_seconds = time.monotonic() - started
        sender, receivers = clients[0], clients
        fan_out = []
        for number in range(messages):
            counts = [len(client.frames) for client in receivers]
            sent_at = time.monotonic()
            ack = await sender.send_message(room_id, f"measure {number}", f"{backend[-20:]}-{number}", timeout=60)
            assert ack["type"] == "message.ack", ack
            message_id = ack["message"]["id"]

            async def heard(client, start):
                await client.wait_for(
                    lambda frame: frame["type"] == "message.new" and frame["message"]["id"] == message_id, 60, start
                )

            await asyncio.gather(*(heard(client, start) for client, start in zip(receivers, counts)))
            fan_out.append(time.monotonic() - sent_at)
        clients_during = redis_clients()
        await close_clients(clients)
    finally:
        server.stop()
    fan_out.sort()
    return {
        "backend": backend,
        "sockets": len(keys),
        "connect_s": round(connect_seconds, 2),
        "fan_out_median_ms": round(statistics.median(fan_out) * 1000, 1),
        "fan_out_max_ms": round(fan_out[-1] * 1000, 1),
        "redis_connections": clients_during,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=1000, help="WebSockets to open (at most 2000).")
    parser.add_argument("--messages", type=int, default=20, help="Messages to time (at most 200).")
    options = parser.parse_args()
    sockets = max(2, min(options.sockets, 2000))
    messages = max(1, min(options.messages, 200))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4 * sockets + 256), hard), hard))

    configure()
    room_id, keys = prepare(sockets)
    for backend in BACKENDS:
        result = asyncio.run(run_backend(backend, room_id, keys, messages))
        print(" ".join(f"{name}={value}" for name, value in result.items()), flush=True)


if __name__ == "__main__":
    main()
