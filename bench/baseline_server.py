"""A minimal broadcast server on the `websockets` library, the benchmark's baseline.

It speaks just enough of the chat protocol for bench/loadgen.py to drive it
with the same scenario as the real server: a `hello` frame on connect, and
for `message.send` a `message.ack` to the sender plus `message.new` to every
socket in the room, with per-room sequence numbers kept in memory. It
authenticates by the session cookie listed in the users file written by
`manage.py create_load_users`, and stores nothing.

Broadcasting uses websockets.broadcast(), which writes the frame to every
open socket without waiting for slow readers (no backpressure); that is the
library's own fan-out path and the cheapest one a Python server can have.
"""

import argparse
import asyncio
import itertools
import json
import logging
import resource
import signal
from datetime import UTC, datetime
from http import HTTPStatus
from http.cookies import SimpleCookie

import websockets
from websockets.asyncio.server import serve

logger = logging.getLogger("bench.baseline_server")

CLOSE_INVALID_FRAME = 4400


def frame_text(frame: dict) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


class BroadcastServer:
    def __init__(self, users_document: dict, origin: str | None):
        self.cookie_name = users_document["cookie_name"]
        self.users_by_key = {user["session_key"]: user for user in users_document["users"]}
        self.origin = origin
        self.sockets_by_room: dict[int, set] = {}
        self.last_seq: dict[int, int] = {}
        self.message_ids = itertools.count(1)

    def _user_for(self, request) -> dict | None:
        cookie = SimpleCookie(request.headers.get("Cookie", ""))
        morsel = cookie.get(self.cookie_name)
        return self.users_by_key.get(morsel.value) if morsel is not None else None

    def process_request(self, connection, request):
        # Reject before the upgrade, as the real server does for a missing
        # session (HTTP 403) or a foreign Origin.
        if self.origin is not None and request.headers.get("Origin") != self.origin:
            return connection.respond(HTTPStatus.FORBIDDEN, "Origin not allowed\n")
        if self._user_for(request) is None:
            return connection.respond(HTTPStatus.FORBIDDEN, "Not signed in\n")
        return None

    async def handle(self, socket):
        user = self._user_for(socket.request)
        author = {"id": user["id"], "username": user["username"], "display_name": user["display_name"]}
        room_ids = set(user["rooms"])
        for room_id in room_ids:
            self.sockets_by_room.setdefault(room_id, set()).add(socket)
        try:
            rooms = [{"id": room_id, "last_seq": self.last_seq.get(room_id, 0)} for room_id in sorted(room_ids)]
            await socket.send(frame_text({"type": "hello", "user": author, "rooms": rooms}))
            async for text in socket:
                await self._receive(socket, author, room_ids, text)
        except websockets.ConnectionClosed:
            pass
        finally:
            for room_id in room_ids:
                self.sockets_by_room[room_id].discard(socket)

    async def _receive(self, socket, author: dict, room_ids: set[int], text) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            await socket.close(CLOSE_INVALID_FRAME, "invalid JSON")
            return
        kind = frame.get("type")
        if kind == "ping":
            await socket.send(frame_text({"type": "pong"}))
            return
        if kind != "message.send" or frame.get("room") not in room_ids:
            error = {"type": "error", "code": "not_member" if kind == "message.send" else "unknown_type"}
            if isinstance(frame.get("client_id"), str):
                error["client_id"] = frame["client_id"]
            await socket.send(frame_text(error))
            return
        room_id = frame["room"]
        seq = self.last_seq.get(room_id, 0) + 1
        self.last_seq[room_id] = seq
        message = {
            "id": str(next(self.message_ids)),
            "room": room_id,
            "seq": seq,
            "author": author,
            "body": frame["body"],
            "created_at": datetime.now(UTC).isoformat(),
            "client_id": frame["client_id"],
        }
        websockets.broadcast(self.sockets_by_room[room_id], frame_text({"type": "message.new", "message": message}))
        await socket.send(frame_text({"type": "message.ack", "client_id": frame["client_id"], "message": message}))


async def serve_forever(args) -> None:
    with open(args.users, encoding="utf-8") as file:
        server = BroadcastServer(json.load(file), args.origin)
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(
        server.handle,
        args.host,
        args.port,
        process_request=server.process_request,
        compression="deflate" if args.per_message_deflate else None,
        max_size=64 * 1024,
    ):
        logger.info("Baseline server listening on %s:%d", args.host, args.port)
        await stop
    logger.info("Baseline server stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--users", required=True, help="JSON file written by manage.py create_load_users.")
    parser.add_argument("--origin", help="Require this exact Origin header (default: accept any).")
    parser.add_argument(
        "--per-message-deflate", action="store_true", help="Accept the permessage-deflate extension."
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve_forever(args))


if __name__ == "__main__":
    main()
