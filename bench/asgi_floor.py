"""The baseline's broadcast as a bare ASGI application: what the ASGI server alone costs.

Served by daphne or uvicorn, it replies to bench/loadgen.py as
bench/baseline_server.py does (hello, message.ack, message.new with per-room
seq numbers in memory, authentication by the session cookie in the users
file), with no Django, no Channels, no database and no channel layer. Its
figures are the floor for the chat server under the same ASGI server: the
difference to the baseline is the server's own cost per socket and per
frame, the difference to the chat server is the project's.

The users file is read from BENCH_USERS (set by bench/run.py).
"""

import itertools
import json
import os
from datetime import UTC, datetime
from http.cookies import SimpleCookie

from bench.baseline_server import frame_text


class FloorServer:
    def __init__(self, users_document: dict):
        self.cookie_name = users_document["cookie_name"]
        self.users_by_key = {user["session_key"]: user for user in users_document["users"]}
        self.sends_by_room: dict[int, dict] = {}
        self.last_seq: dict[int, int] = {}
        self.message_ids = itertools.count(1)

    def _user_for(self, scope) -> dict | None:
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                morsel = SimpleCookie(value.decode("latin1")).get(self.cookie_name)
                return self.users_by_key.get(morsel.value) if morsel is not None else None
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return
        user = None
        token = object()
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.connect":
                    user = self._user_for(scope)
                    if user is None:
                        await send({"type": "websocket.close", "code": 1008})
                        return
                    await self._open(user, token, send)
                elif message["type"] == "websocket.receive":
                    await self._receive(user, send, message.get("text"))
                elif message["type"] == "websocket.disconnect":
                    return
        finally:
            if user is not None:
                for room_id in user["rooms"]:
                    self.sends_by_room.get(room_id, {}).pop(token, None)

    async def _open(self, user: dict, token, send) -> None:
        for room_id in user["rooms"]:
            self.sends_by_room.setdefault(room_id, {})[token] = send
        await send({"type": "websocket.accept"})
        author = {"id": user["id"], "username": user["username"], "display_name": user["display_name"]}
        rooms = [{"id": room_id, "last_seq": self.last_seq.get(room_id, 0)} for room_id in sorted(user["rooms"])]
        await send({"type": "websocket.send", "text": frame_text({"type": "hello", "user": author, "rooms": rooms})})

    async def _receive(self, user: dict, send, text) -> None:
        frame = json.loads(text or "{}")
        if frame.get("type") == "ping":
            await send({"type": "websocket.send", "text": frame_text({"type": "pong"})})
            return
        room_id = frame.get("room")
        if frame.get("type") != "message.send" or room_id not in user["rooms"]:
            await send({"type": "websocket.send", "text": frame_text({"type": "error", "code": "unknown_type"})})
            return
        seq = self.last_seq[room_id] = self.last_seq.get(room_id, 0) + 1
        message = {
            "id": str(next(self.message_ids)),
            "room": room_id,
            "seq": seq,
            "author": {"id": user["id"], "username": user["username"], "display_name": user["display_name"]},
            "body": frame["body"],
            "created_at": datetime.now(UTC).isoformat(),
            "client_id": frame["client_id"],
        }
        await send({"type": "websocket.send", "text": frame_text({"type": "message.ack",
                                                                   "client_id": frame["client_id"],
                                                                   "message": message})})
        text = frame_text({"type": "message.new", "message": message})
        for member_send in list(self.sends_by_room.get(room_id, {}).values()):
            await member_send({"type": "websocket.send", "text": text})


with open(os.environ["BENCH_USERS"], encoding="utf-8") as users_file:
    application = FloorServer(json.load(users_file))
