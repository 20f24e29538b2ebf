"""WebSocket load generator for the chat server and the baseline server.

Run as its own process. It opens N sockets signed in by session cookie
(users file from `manage.py create_load_users`), then runs phases, each
bounded in count and time:

  connect  open the sockets; connections/s, server CPU per connection
  idle     sit still; server RSS per socket and idle CPU
  latency  one message at a time to one room, waiting for every delivery
  burst    many senders send back-to-back into one room; deliveries/s
  mixed    random senders and rooms at a fixed message rate

Every message body starts with "t=<time.time_ns()>" at the moment of
sending, so a delivery's latency is its arrival time minus that stamp on
the same clock. Each socket records (room, seq) -> message id, which
counts duplicates; after a phase every acked message is checked against
every open member socket, which counts losses.

Server CPU (user + system, all threads) and RSS come from psutil on the
server PIDs given with --server-pid. The generator prints one JSON object
on stdout and its progress on stderr.
"""

import argparse
import asyncio
import itertools
import json
import logging
import random
import resource
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field

import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

logger = logging.getLogger("bench.loadgen")

# The server's per-socket token bucket (RATE_BURST and RATE_PER_SECOND in
# messaging/consumers.py) is 30 frames at once and 10 per second after.
# Senders stay below it so that no send is rejected as rate_limited.
SENDER_BURST = 25
SENDER_PER_SECOND = 8.0


class CountingConnection(ClientConnection):
    """A client connection that counts the bytes it reads from the wire."""

    bytes_received = 0

    def data_received(self, data: bytes) -> None:
        CountingConnection.bytes_received += len(data)
        super().data_received(data)


@dataclass(eq=False)
class SentMessage:
    phase: str
    room: int
    sent_ns: int
    expected: int
    delivered: int = 0
    last_delivery_ns: int = 0
    ack: dict | None = None
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class SenderBucket:
    """Client-side mirror of the server's rate limit, slightly stricter."""

    def __init__(self):
        self.tokens = float(SENDER_BURST)
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(SENDER_BURST, self.tokens + (now - self.updated) * SENDER_PER_SECOND)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Client:
    def __init__(self, index: int, user: dict, url: str):
        self.index = index
        self.user = user
        self.url = url
        self.rooms: list[int] = user["rooms"]
        self.seen: dict[int, dict[int, str]] = {}
        self.bucket = SenderBucket()
        self.socket = None
        self.reader = None
        self.open = False


class ServerProbe:
    """CPU time and RSS of the server processes under test."""

    def __init__(self, pids: list[int]):
        self.processes = [psutil.Process(pid) for pid in pids]

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.processes:
            times = process.cpu_times()
            total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        return sum(process.memory_info().rss for process in self.processes)


def percentile(sorted_values, fraction: float) -> float | None:
    if not sorted_values:
        return None
    position = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[position]


def latency_summary(values) -> dict:
    ordered = sorted(values)
    return {
        "p50_ms": _round(percentile(ordered, 0.50)),
        "p95_ms": _round(percentile(ordered, 0.95)),
        "p99_ms": _round(percentile(ordered, 0.99)),
        "max_ms": _round(ordered[-1] if ordered else None),
    }


def _round(value, digits=3):
    return None if value is None else round(value, digits)


class LoadGenerator:
    def __init__(self, args, users_document: dict):
        self.args = args
        self.cookie_name = users_document["cookie_name"]
        self.room_members = {room["id"]: room["members"] for room in users_document["rooms"]}
        users = users_document["users"][: args.sockets]
        if len(users) < args.sockets:
            raise SystemExit(f"The users file has {len(users)} users; --sockets asks for {args.sockets}.")
        self.clients = [Client(index, user, args.url[index % len(args.url)]) for index, user in enumerate(users)]
        self.probe = ServerProbe(args.server_pid)
        self.own_process = psutil.Process()
        self.sends: dict[str, SentMessage] = {}
        self.latencies: dict[str, array] = {}
        self.duplicated = 0
        self.seq_conflicts = 0
        self.foreign = 0
        self.errors: Counter = Counter()
        self.unexpected_closes = 0
        self.closing = False
        self.client_ids = itertools.count(1)
        self.padding = "x" * max(0, args.body_bytes - 22)

    # Socket handling

    def _origin_for(self, url: str) -> str:
        host = url.split("//", 1)[1].split("/", 1)[0]
        return f"http://{host}"

    async def _open(self, client: Client) -> None:
        client.socket = await connect(
            client.url,
            origin=self._origin_for(client.url),
            additional_headers={"Cookie": f"{self.cookie_name}={client.user['session_key']}"},
            compression="deflate" if self.args.compression == "deflate" else None,
            ping_interval=None,
            open_timeout=self.args.connect_timeout,
            close_timeout=2,
            max_size=2**20,
            max_queue=None,
            create_connection=CountingConnection,
        )
        try:
            hello = json.loads(await asyncio.wait_for(client.socket.recv(), self.args.connect_timeout))
            if hello.get("type") != "hello":
                raise RuntimeError(f"expected a hello frame, got {hello.get('type')!r}")
        except BaseException:
            client.socket.transport.abort()
            raise
        client.open = True
        client.reader = asyncio.create_task(self._read_forever(client))

    async def _read_forever(self, client: Client) -> None:
        try:
            async for text in client.socket:
                self._on_frame(client, text)
        except ConnectionClosed:
            pass
        finally:
            client.open = False
            if not self.closing:
                self.unexpected_closes += 1

    def _on_frame(self, client: Client, text: str) -> None:
        now = time.time_ns()
        frame = json.loads(text)
        kind = frame.get("type")
        if kind == "message.new":
            message = frame["message"]
            sent = self.sends.get(message["client_id"])
            if sent is None:
                self.foreign += 1
                return
            seen = client.seen.setdefault(message["room"], {})
            previous = seen.get(message["seq"])
            if previous is not None:
                if previous == message["id"]:
                    self.duplicated += 1
                else:
                    self.seq_conflicts += 1
                return
            seen[message["seq"]] = message["id"]
            body = message["body"]
            sent_ns = int(body[2 : body.index(" ")])
            self.latencies[sent.phase].append((now - sent_ns) / 1e6)
            sent.delivered += 1
            sent.last_delivery_ns = now
            if sent.delivered >= sent.expected:
                sent.done.set()
        elif kind == "message.ack":
            sent = self.sends.get(frame.get("client_id"))
            if sent is not None:
                sent.ack = frame["message"]
        elif kind == "error":
            code = frame.get("code", "unknown")
            self.errors[code] += 1
            sent = self.sends.get(frame.get("client_id"))
            if sent is not None:
                sent.error = code
                sent.done.set()

    def _open_members(self, room_id: int) -> list[Client]:
        members = []
        for index in self.room_members.get(room_id, ()):
            if index < len(self.clients) and self.clients[index].open:
                members.append(self.clients[index])
        return members

    async def _send(self, client: Client, room_id: int, phase: str, expected: int) -> SentMessage:
        client_id = f"{phase}-{next(self.client_ids)}"
        sent_ns = time.time_ns()
        sent = SentMessage(phase=phase, room=room_id, sent_ns=sent_ns, expected=expected)
        self.sends[client_id] = sent
        body = f"t={sent_ns} {self.padding}"
        await client.socket.send(
            json.dumps({"type": "message.send", "room": room_id, "body": body, "client_id": client_id})
        )
        return sent

    # Measurement helpers

    def _snapshot(self) -> dict:
        own = self.own_process.cpu_times()
        return {
            "wall": time.monotonic(),
            "server_cpu": self.probe.cpu_seconds(),
            "loadgen_cpu": own.user + own.system,
            "bytes_received": CountingConnection.bytes_received,
        }

    def _phase_result(self, phase: str, before: dict, after: dict, sends: list[SentMessage]) -> dict:
        deliveries = sum(sent.delivered for sent in sends)
        server_cpu = after["server_cpu"] - before["server_cpu"]
        lost = self._count_lost(sends)
        first_send = min((sent.sent_ns for sent in sends), default=0)
        last_delivery = max((sent.last_delivery_ns for sent in sends), default=0)
        delivery_seconds = (last_delivery - first_send) / 1e9 if deliveries else None
        completions = sorted(
            (sent.last_delivery_ns - sent.sent_ns) / 1e6 for sent in sends if sent.done.is_set() and sent.delivered
        )
        result = {
            "messages": len(sends),
            "acked": sum(1 for sent in sends if sent.ack is not None),
            "send_errors": sum(1 for sent in sends if sent.error is not None),
            "deliveries": deliveries,
            "expected_deliveries": sum(sent.expected for sent in sends),
            "lost": lost,
            "wall_s": _round(after["wall"] - before["wall"]),
            "delivery_window_s": _round(delivery_seconds),
            "deliveries_per_s": _round(deliveries / delivery_seconds, 1) if delivery_seconds else None,
            "server_cpu_s": _round(server_cpu),
            "server_cpu_us_per_delivery": _round(server_cpu / deliveries * 1e6, 2) if deliveries else None,
            "loadgen_cpu_s": _round(after["loadgen_cpu"] - before["loadgen_cpu"]),
            "bytes_received": after["bytes_received"] - before["bytes_received"],
            "bytes_per_delivery": _round((after["bytes_received"] - before["bytes_received"]) / deliveries, 1)
            if deliveries
            else None,
            "fanout_complete_p50_ms": _round(percentile(completions, 0.5)),
            "fanout_complete_p99_ms": _round(percentile(completions, 0.99)),
        }
        result.update(latency_summary(self.latencies.get(phase, ())))
        return result

    def _count_lost(self, sends: list[SentMessage]) -> int:
        """Count (acked message, open member socket) pairs with no delivery."""
        lost = 0
        for sent in sends:
            if sent.ack is None:
                continue
            room_id, seq = sent.ack["room"], sent.ack["seq"]
            for client in self._open_members(room_id):
                if client.seen.get(room_id, {}).get(seq) is None:
                    lost += 1
        return lost

    async def _wait_delivered(self, sends: list[SentMessage], timeout: float) -> bool:
        pending = [sent.done.wait() for sent in sends if not sent.done.is_set()]
        if not pending:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*pending), timeout)
            return True
        except TimeoutError:
            return False

    def _target_room(self) -> int:
        if self.args.room is not None:
            return self.args.room
        return max(self.room_members, key=lambda room_id: len(self._open_members(room_id)))

    # Phases

    async def phase_connect(self) -> dict:
        warmup = self.clients[: self.args.warmup]
        for client in warmup:
            await self._open(client)
        self.closing = True
        for client in warmup:
            await client.socket.close()
            client.open = False
        self.closing = False
        await asyncio.sleep(1.0)

        rss_before = self.probe.rss_bytes()
        before = self._snapshot()
        limit = asyncio.Semaphore(self.args.connect_concurrency)
        failures: Counter = Counter()

        async def open_one(client: Client) -> None:
            async with limit:
                try:
                    await self._open(client)
                except (OSError, TimeoutError, WebSocketException, RuntimeError) as error:
                    failures[type(error).__name__] += 1
                    logger.debug("Socket %d failed to open: %s", client.index, error)

        await asyncio.gather(*(open_one(client) for client in self.clients))
        first_pass_failures = dict(failures)
        # Failed handshakes are retried, as a real client would, so that the
        # later phases still see every socket; the first-pass count is reported.
        for attempt in range(self.args.connect_retries):
            missing = [client for client in self.clients if not client.open]
            if not missing:
                break
            logger.info("Retrying %d sockets that failed to open (retry %d)", len(missing), attempt + 1)
            await asyncio.sleep(1.0)
            await asyncio.gather(*(open_one(client) for client in missing))
        after = self._snapshot()
        opened = sum(1 for client in self.clients if client.open)
        await asyncio.sleep(self.args.settle_seconds)
        rss_after = self.probe.rss_bytes()
        server_cpu = after["server_cpu"] - before["server_cpu"]
        seconds = after["wall"] - before["wall"]
        logger.info("Opened %d of %d sockets in %.1f s", opened, len(self.clients), seconds)
        return {
            "sockets": opened,
            "failed_first_attempt": first_pass_failures,
            "failed_attempts": dict(failures),
            "seconds": _round(seconds),
            "connections_per_s": _round(opened / seconds, 1),
            "server_cpu_s": _round(server_cpu),
            "cpu_ms_per_connection": _round(server_cpu / opened * 1e3) if opened else None,
            "loadgen_cpu_s": _round(after["loadgen_cpu"] - before["loadgen_cpu"]),
            "rss_before_mb": _round(rss_before / 2**20, 1),
            "rss_after_mb": _round(rss_after / 2**20, 1),
            "kb_per_socket": _round((rss_after - rss_before) / opened / 1024, 2) if opened else None,
        }

    async def phase_idle(self) -> dict:
        before = self._snapshot()
        await asyncio.sleep(self.args.idle_seconds)
        after = self._snapshot()
        server_cpu = after["server_cpu"] - before["server_cpu"]
        seconds = after["wall"] - before["wall"]
        opened = sum(1 for client in self.clients if client.open)
        return {
            "seconds": _round(seconds),
            "sockets": opened,
            "server_cpu_percent": _round(server_cpu / seconds * 100, 2),
            "cpu_ms_per_socket_per_minute": _round(server_cpu / opened / seconds * 60 * 1e3, 3) if opened else None,
            "rss_mb": _round(self.probe.rss_bytes() / 2**20, 1),
        }

    async def phase_latency(self) -> dict:
        phase = "latency"
        self.latencies[phase] = array("d")
        room_id = self._target_room()
        members = self._open_members(room_id)
        senders = itertools.cycle(members)
        sends = []
        timeouts = 0
        deadline = time.monotonic() + self.args.phase_timeout
        before = self._snapshot()
        for _ in range(self.args.latency_messages):
            if time.monotonic() > deadline:
                break
            sent = await self._send(next(senders), room_id, phase, expected=len(members))
            sends.append(sent)
            if not await self._wait_delivered([sent], self.args.message_timeout):
                timeouts += 1
            await asyncio.sleep(self.args.latency_gap)
        after = self._snapshot()
        result = self._phase_result(phase, before, after, sends)
        result.update({"room": room_id, "room_sockets": len(members), "message_timeouts": timeouts})
        return result

    async def phase_burst(self) -> dict:
        phase = "burst"
        self.latencies[phase] = array("d")
        room_id = self._target_room()
        members = self._open_members(room_id)
        senders = members[: self.args.burst_senders]
        per_sender = min(SENDER_BURST, max(1, self.args.burst_messages // max(1, len(senders))))
        sends: list[SentMessage] = []

        async def send_all(client: Client) -> None:
            for _ in range(per_sender):
                sends.append(await self._send(client, room_id, phase, expected=len(members)))

        before = self._snapshot()
        await asyncio.gather(*(send_all(client) for client in senders))
        complete = await self._wait_delivered(sends, self.args.phase_timeout)
        after = self._snapshot()
        result = self._phase_result(phase, before, after, sends)
        result.update(
            {"room": room_id, "room_sockets": len(members), "senders": len(senders), "complete": complete}
        )
        return result

    async def phase_mixed(self) -> dict:
        phase = "mixed"
        self.latencies[phase] = array("d")
        rng = random.Random(self.args.seed)
        candidates = [client for client in self.clients if client.open and client.rooms]
        expected_by_room = {room_id: len(self._open_members(room_id)) for room_id in self.room_members}
        sends: list[SentMessage] = []
        skipped = 0
        interval = 1.0 / self.args.mixed_rate
        before = self._snapshot()
        start = time.monotonic()
        total = int(self.args.mixed_rate * self.args.mixed_seconds)
        for number in range(total):
            delay = start + number * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            client = rng.choice(candidates)
            if not client.open or not client.bucket.take():
                skipped += 1
                continue
            room_id = rng.choice(client.rooms)
            sends.append(await self._send(client, room_id, phase, expected=expected_by_room[room_id]))
        send_seconds = time.monotonic() - start
        complete = await self._wait_delivered(sends, self.args.message_timeout)
        after = self._snapshot()
        result = self._phase_result(phase, before, after, sends)
        deliveries = result["deliveries"]
        result.update(
            {
                "target_messages_per_s": self.args.mixed_rate,
                "messages_per_s": _round(len(sends) / send_seconds, 1),
                "skipped_by_rate_limit": skipped,
                "complete": complete,
                # Over the whole phase, not the delivery window: the rate the
                # server sustained at this offered load.
                "deliveries_per_s": _round(deliveries / (after["wall"] - before["wall"]), 1),
                "server_cpu_percent": _round(
                    (after["server_cpu"] - before["server_cpu"]) / (after["wall"] - before["wall"]) * 100, 1
                ),
            }
        )
        return result

    async def run(self) -> dict:
        report = {"sockets_requested": len(self.clients), "urls": self.args.url, "compression": self.args.compression}
        report["connect"] = await self.phase_connect()
        for phase in self.args.phases:
            logger.info("Phase %s", phase)
            report[phase] = await getattr(self, f"phase_{phase}")()
        report["duplicated"] = self.duplicated
        report["seq_conflicts"] = self.seq_conflicts
        report["foreign_messages"] = self.foreign
        report["errors"] = dict(self.errors)
        report["unexpected_closes"] = self.unexpected_closes
        report["lost"] = sum(report[phase].get("lost", 0) for phase in self.args.phases)
        extensions = set()
        for client in self.clients:
            if client.socket is not None:
                extensions.add(client.socket.response.headers.get("Sec-WebSocket-Extensions", ""))
        report["negotiated_extensions"] = sorted(extensions)
        return report

    def abort_all(self) -> None:
        self.closing = True
        for client in self.clients:
            if client.socket is not None:
                client.socket.transport.abort()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="WebSocket load generator for the chat server.")
    parser.add_argument("--url", action="append", required=True, help="ws:// URL; repeat to spread sockets over servers.")
    parser.add_argument("--server-pid", action="append", type=int, required=True, help="Server PID; repeatable.")
    parser.add_argument("--users", required=True, help="JSON file written by manage.py create_load_users.")
    parser.add_argument("--sockets", type=int, required=True, help="Number of sockets (the first N users).")
    parser.add_argument(
        "--phases",
        default="idle,latency,burst",
        help="Comma-separated phases after connect: idle, latency, burst, mixed (default: idle,latency,burst).",
    )
    parser.add_argument("--room", type=int, help="Room for latency and burst (default: the largest).")
    parser.add_argument("--connect-concurrency", type=int, default=100, help="Handshakes in flight (default: 100).")
    parser.add_argument("--connect-timeout", type=float, default=60.0, help="Seconds per handshake (default: 60).")
    parser.add_argument(
        "--connect-retries", type=int, default=3, help="Passes that retry sockets that failed to open (default: 3)."
    )
    parser.add_argument("--warmup", type=int, default=10, help="Sockets opened and closed first (default: 10).")
    parser.add_argument("--settle-seconds", type=float, default=2.0, help="Wait before reading RSS (default: 2).")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="Length of the idle phase (default: 5).")
    parser.add_argument("--latency-messages", type=int, default=20, help="Messages in the latency phase.")
    parser.add_argument("--latency-gap", type=float, default=0.05, help="Seconds between latency messages.")
    parser.add_argument("--burst-messages", type=int, default=200, help="Messages in the burst phase.")
    parser.add_argument("--burst-senders", type=int, default=20, help="Sockets sending in the burst phase.")
    parser.add_argument("--mixed-rate", type=float, default=20.0, help="Messages per second in the mixed phase.")
    parser.add_argument("--mixed-seconds", type=float, default=20.0, help="Length of the mixed phase.")
    parser.add_argument("--message-timeout", type=float, default=30.0, help="Seconds to wait for one fan-out.")
    parser.add_argument("--phase-timeout", type=float, default=120.0, help="Seconds after which a phase stops.")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="Hard limit for the whole run.")
    parser.add_argument("--body-bytes", type=int, default=120, help="Message body length (default: 120).")
    parser.add_argument("--compression", choices=("none", "deflate"), default="none", help="Offer permessage-deflate.")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    args.phases = [phase for phase in args.phases.split(",") if phase]
    for phase in args.phases:
        if phase not in ("idle", "latency", "burst", "mixed"):
            parser.error(f"unknown phase {phase!r}; use idle, latency, burst or mixed")
    return args


async def main_async(args) -> dict:
    with open(args.users, encoding="utf-8") as file:
        generator = LoadGenerator(args, json.load(file))
    try:
        return await asyncio.wait_for(generator.run(), args.max_seconds)
    finally:
        generator.abort_all()


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s loadgen %(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.sockets + 100 > hard:
        raise SystemExit(f"--sockets {args.sockets} needs more open files than the limit of {hard}.")
    try:
        import uvloop
    except ImportError:
        report = asyncio.run(main_async(args))
    else:
        report = uvloop.run(main_async(args))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
