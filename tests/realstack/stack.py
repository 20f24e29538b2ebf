"""Helpers for tests against real MariaDB, Redis and daphne processes.

Servers started here bind to 127.0.0.1 on ports 18300-18399 and are
stopped by PID. The daphne processes (tests.servers.ChatServer) get the
test databases and Redis of the pytest process unless a test passes
other URLs, so rows the test commits are what the servers see.
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from django.conf import settings

from tests.servers import ChatServer, port_is_open

# Ports, all in the range reserved for these tests.
DAPHNE_PORTS = range(18310, 18330)
OWN_REDIS_PORT = 18391
OWN_MARIADB_PORT = 18381

ORIGIN = "http://localhost"


# Environment of the servers


def mysql_url(alias: str, host: str | None = None, port: int | None = None, name: str | None = None) -> str:
    """Return a mysql:// URL for the database `alias` uses now (its test database under pytest)."""
    config = settings.DATABASES[alias]
    user = quote(config["USER"] or "", safe="")
    password = f":{quote(config['PASSWORD'], safe='')}" if config["PASSWORD"] else ""
    return (
        f"mysql://{user}{password}@{host or config['HOST']}:{port or config['PORT'] or 3306}/"
        f"{name or config['NAME']}"
    )


def server_env(**overrides) -> dict[str, str]:
    """Return the variables that point a server at this test run's databases and Redis."""
    env = {
        "DATABASE_URL": mysql_url("default"),
        "MESSAGE_SHARD_URLS": ",".join(mysql_url(alias) for alias in settings.MESSAGE_SHARDS),
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1",
        "DJANGO_SECURE_COOKIES": "false",
        "LOG_LEVEL": "INFO",
    }
    env.update({name: str(value) for name, value in overrides.items()})
    return env


def free_daphne_port() -> int:
    for port in DAPHNE_PORTS:
        if not port_is_open("127.0.0.1", port):
            return port
    raise RuntimeError(f"Every port from {DAPHNE_PORTS.start} to {DAPHNE_PORTS.stop - 1} is taken.")


def start_server(data_dir: Path, **env) -> ChatServer:
    """Start daphne on a free port with this run's databases; return it once /healthz answers."""
    server = ChatServer(port=free_daphne_port(), data_dir=data_dir, env=server_env(**env))
    return server.start()


# Users and sessions, made in the pytest process


def make_users(prefix: str, count: int) -> list:
    """Create `count` users with unusable passwords in one query; return them."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    User.objects.bulk_create(
        [User(username=f"{prefix}{index}", display_name=f"{prefix} {index}", password="!") for index in range(count)]
    )
    return list(User.objects.filter(username__startswith=prefix).order_by("id"))


def session_key_for(user) -> str:
    """Return the key of a new logged-in session for `user` (stored through SESSION_ENGINE)."""
    from importlib import import_module

    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return store.session_key


def add_members(room, users) -> None:
    from rooms.models import Membership

    Membership.objects.bulk_create([Membership(room=room, user=user) for user in users], ignore_conflicts=True)


# WebSocket clients (the websockets library, as a browser would connect)


class Client:
    """One WebSocket of a user; a reader task keeps every frame it receives."""

    def __init__(self, connection):
        self.connection = connection
        self.frames: list[dict] = []
        self.raw: list[str] = []
        self.closed = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server: ChatServer, session_key: str, timeout: float = 20) -> "Client":
        from websockets.asyncio.client import connect

        connection = await asyncio.wait_for(
            connect(
                server.ws_url,
                origin=ORIGIN,
                additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={session_key}"},
                open_timeout=timeout,
                max_size=2**22,
                ping_interval=None,
            ),
            timeout,
        )
        client = cls(connection)
        client.hello = await client.wait_for(lambda frame: True, timeout)
        assert client.hello["type"] == "hello", client.hello
        return client

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for text in self.connection:
                frame = json.loads(text)
                async with self._arrived:
                    self.raw.append(text)
                    self.frames.append(frame)
                    self._arrived.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            async with self._arrived:
                self._arrived.notify_all()

    async def wait_for(self, predicate, timeout: float = 10, start: int = 0) -> dict:
        """Return the first frame from index `start` on, received or arriving within `timeout`, that matches."""
        checked = start
        deadline = time.monotonic() + timeout
        async with self._arrived:
            while True:
                for frame in self.frames[checked:]:
                    if predicate(frame):
                        return frame
                checked = len(self.frames)
                if self.closed.is_set():
                    raise ConnectionError(f"The socket closed; last frames: {self.frames[-5:]}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"No matching frame in {timeout} s; last frames: {self.frames[-5:]}")
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    pass

    async def send(self, frame: dict) -> None:
        await self.connection.send(json.dumps(frame, ensure_ascii=False))

    async def send_message(self, room_id: int, body: str, client_id: str, timeout: float = 10) -> dict:
        """Send a message; return its message.ack frame or the error frame for it."""
        start = len(self.frames)
        await self.send({"type": "message.send", "room": room_id, "body": body, "client_id": client_id})
        return await self.wait_for(
            lambda frame: frame.get("client_id") == client_id and frame["type"] in ("message.ack", "error"),
            timeout,
            start,
        )

    async def sync(self, room_id: int, after_seq: int, timeout: float = 10) -> list[dict]:
        """Return every message of the room after `after_seq`, following has_more."""
        messages = []
        while True:
            start = len(self.frames)
            await self.send({"type": "sync", "room": room_id, "after_seq": after_seq, "limit": 200})
            batch = await self.wait_for(
                lambda frame: frame["type"] in ("sync.batch", "error") and frame.get("room") == room_id, timeout, start
            )
            assert batch["type"] == "sync.batch", batch
            messages.extend(batch["messages"])
            if not batch["has_more"] or not batch["messages"]:
                return messages
            after_seq = batch["messages"][-1]["seq"]

    def new_messages(self, room_id: int) -> list[dict]:
        return [
            frame["message"] for frame in self.frames if frame["type"] == "message.new" and frame["message"]["room"] == room_id
        ]

    async def close(self) -> None:
        await self.connection.close()
        await asyncio.wait_for(self._reader, 10)


async def open_clients(server: ChatServer, session_keys, concurrency: int = 50, timeout: float = 30) -> list[Client]:
    """Open one socket per session key, at most `concurrency` handshakes at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def open_one(key):
        async with gate:
            return await Client.open(server, key, timeout)

    return list(await asyncio.gather(*(open_one(key) for key in session_keys)))


async def close_clients(clients) -> None:
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


# MySQL connections of a process


def mysql_connections_of(pid: int) -> int:
    """Count the MySQL server connections whose client end belongs to process `pid`."""
    from django.db import connections

    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT host FROM information_schema.processlist WHERE host LIKE '127.0.0.1:%%'")
        hosts = [row[0] for row in cursor.fetchall()]
    return sum(1 for host in hosts if int(host.rsplit(":", 1)[1]) in ports)


# Private servers for fault tests


@contextmanager
def own_redis(workdir: Path, port: int = OWN_REDIS_PORT):
    """Run a private redis-server on `port`; yield a function that restarts it."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server).")
    workdir.mkdir(parents=True, exist_ok=True)
    pidfile = workdir / f"redis-{port}.pid"

    def start():
        subprocess.run(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "yes", "--pidfile", str(pidfile), "--dir", str(workdir),
             "--logfile", str(workdir / f"redis-{port}.log")],
            check=True,
        )
        wait_for_port(port, 10)

    def stop():
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        pidfile.unlink(missing_ok=True)

    start()
    try:
        yield start, stop
    finally:
        stop()


class OwnMariaDB:
    """A private MariaDB server in its own data directory, for a shard a test may stop."""

    def __init__(self, workdir: Path, port: int = OWN_MARIADB_PORT):
        self.workdir = workdir
        self.port = port
        self.datadir = workdir / "mariadb-data"
        self.socket = workdir / "mariadb.sock"
        self.process: subprocess.Popen | None = None

    def install(self) -> None:
        installer = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if installer is None:
            raise RuntimeError("mariadb-install-db is not installed (apt-get install mariadb-server).")
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            # --no-defaults keeps the system my.cnf (user=mysql, a log file
            # under /var/log) out of this private server.
            [installer, "--no-defaults", "--auth-root-authentication-method=normal", f"--datadir={self.datadir}",
             "--user=root", "--skip-test-db"],
            check=True, capture_output=True, timeout=120,
        )

    def start(self) -> None:
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        log = open(self.workdir / "mariadbd.log", "ab")
        self.process = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.socket}", "--user=root", "--skip-grant-tables",
             "--character-set-server=utf8mb4", "--collation-server=utf8mb4_uca1400_as_ci",
             "--innodb-buffer-pool-size=32M", "--skip-log-bin", f"--pid-file={self.workdir / 'mariadbd.pid'}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for_port(self.port, 60, self.process)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def execute(self, sql: str) -> None:
        import MySQLdb

        connection = MySQLdb.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=5)
        try:
            connection.cursor().execute(sql)
        finally:
            connection.close()


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not port_is_open("127.0.0.1", port):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"The server for port {port} exited with {process.returncode}.")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Nothing answered on port {port} within {timeout} s.")
        time.sleep(0.1)
