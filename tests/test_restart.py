"""Messages survive a server restart and a crash: all there, once each, in order.

Each test runs daphne in a subprocess on the embedded default (SQLite files
in a fresh data directory), logs in over HTTP, talks over a real WebSocket
with the `websockets` client, stops the server with SIGTERM or SIGKILL while
a send is still in flight, starts it again on the same data and checks the
room's whole history.
"""

import asyncio
import json
import shutil
import signal

import pytest
from django.conf import settings
from websockets.asyncio.client import connect

from tests.servers import ChatServer, cookie_header, free_port, http_login

pytestmark = pytest.mark.server

PASSWORD = "restart-pass-phrase"
BEFORE_RESTART = 10
FRAME_TIMEOUT = 10

SETUP = f"""
from django.contrib.auth import get_user_model
from rooms.actions import create_room, join_room
User = get_user_model()
alice = User.objects.create_user("alice", password={PASSWORD!r}, display_name="Alice")
bob = User.objects.create_user("bob", password={PASSWORD!r}, display_name="Bob")
room = create_room(alice, "general")
join_room(bob, room.pk)
print(room.pk)
"""


@pytest.fixture
def make_server():
    servers = []

    def make(name: str, port: int) -> ChatServer:
        data_dir = settings.DATA_DIR / "servers" / name
        shutil.rmtree(data_dir, ignore_errors=True)
        server = ChatServer(port=port, data_dir=data_dir)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop(signal.SIGKILL)


def open_socket(server: ChatServer, cookies: dict):
    return connect(
        server.ws_url,
        origin=server.origin,
        additional_headers={"Cookie": cookie_header(cookies)},
        open_timeout=FRAME_TIMEOUT,
        close_timeout=1,
    )


async def next_frame(ws, frame_type: str, where=None, **fields) -> dict:
    """Return the next frame of `frame_type` whose fields match; skip others."""
    async with asyncio.timeout(FRAME_TIMEOUT):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "error" and frame_type != "error":
                raise AssertionError(f"the server answered with an error: {frame}")
            if (
                frame["type"] == frame_type
                and all(frame.get(key) == value for key, value in fields.items())
                and (where is None or where(frame))
            ):
                return frame


def send_frame(room_id: int, client_id: str, body: str) -> str:
    return json.dumps({"type": "message.send", "room": room_id, "body": body, "client_id": client_id})


async def sync_all(ws, room_id: int) -> list[dict]:
    messages, after = [], 0
    while True:
        await ws.send(json.dumps({"type": "sync", "room": room_id, "after_seq": after, "limit": 4}))
        batch = await next_frame(ws, "sync.batch", room=room_id)
        messages += batch["messages"]
        if not batch["has_more"]:
            return messages
        after = batch["messages"][-1]["seq"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_restart_keeps_messages_exactly_once(make_server, sig):
    server = make_server(f"restart-{sig.name.lower()}", free_port())
    server.migrate()
    room_id = int(server.shell(SETUP).strip())
    server.start()
    alice_cookies = http_login(server.url, "alice", PASSWORD)
    bob_cookies = http_login(server.url, "bob", PASSWORD)

    async with open_socket(server, alice_cookies) as ws:
        hello = await next_frame(ws, "hello")
        assert [(room["id"], room["last_seq"]) for room in hello["rooms"]] == [(room_id, 0)]
        for number in range(1, BEFORE_RESTART + 1):
            await ws.send(send_frame(room_id, f"c{number}", f"before {number}"))
        acks = [(await next_frame(ws, "message.ack", client_id=f"c{n}"))["message"] for n in range(1, BEFORE_RESTART + 1)]
        assert [ack["seq"] for ack in acks] == list(range(1, BEFORE_RESTART + 1))
        # One more goes out and the server stops before its answer arrives:
        # it may or may not be stored, and the client cannot tell which.
        await ws.send(send_frame(room_id, "c-in-flight", "in flight"))
        # In a thread, so this client's event loop keeps running and can
        # answer the closing handshake daphne sends on SIGTERM.
        exit_code = await asyncio.to_thread(server.stop, sig)
    # A clean stop with a socket open must exit cleanly, not crash.
    assert exit_code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)

    server.start()
    async with open_socket(server, alice_cookies) as ws, open_socket(server, bob_cookies) as bob_ws:
        hello = await next_frame(ws, "hello")
        assert hello["rooms"][0]["last_seq"] in (BEFORE_RESTART, BEFORE_RESTART + 1)
        await next_frame(bob_ws, "hello")

        # The client resends what it never saw acknowledged, with the same client_id.
        await ws.send(send_frame(room_id, "c-in-flight", "in flight"))
        in_flight = (await next_frame(ws, "message.ack", client_id="c-in-flight"))["message"]
        assert in_flight["seq"] == BEFORE_RESTART + 1
        # An earlier send repeated after the restart is still the same message.
        await ws.send(send_frame(room_id, "c2", "before 2"))
        again = (await next_frame(ws, "message.ack", client_id="c2"))["message"]
        assert again == acks[1]

        # Live delivery works after the restart, with the next seq.
        await ws.send(send_frame(room_id, "c-after", "after the restart"))
        after = (await next_frame(ws, "message.ack", client_id="c-after"))["message"]
        delivered = await next_frame(bob_ws, "message.new", where=lambda frame: frame["message"]["client_id"] == "c-after")
        assert delivered["message"] == after
        assert after["seq"] == BEFORE_RESTART + 2

        history = await sync_all(ws, room_id)

    assert [message["seq"] for message in history] == list(range(1, BEFORE_RESTART + 3))
    assert [message["client_id"] for message in history] == [
        *(f"c{number}" for number in range(1, BEFORE_RESTART + 1)),
        "c-in-flight",
        "c-after",
    ]
    assert history[:BEFORE_RESTART] == acks
    assert history[BEFORE_RESTART:] == [in_flight, after]
    assert len({message["id"] for message in history}) == len(history)
    # Ids stay time-ordered across the restart, even with a new worker id.
    assert [int(message["id"]) for message in history] == sorted(int(message["id"]) for message in history)
