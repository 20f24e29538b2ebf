"""Run the real server (daphne) in a subprocess, for tests that cross a process.

    server = ChatServer(port=free_port(), data_dir=path)
    server.migrate()                          # manage.py migrate_all, same env
    server.shell("from accounts.models import User; ...")
    server.start()                            # returns once GET /healthz answers 200
    cookies = http_login(server.url, "alice", "password")
    server.stop()                             # SIGTERM by PID, SIGKILL after a grace period
    server.stop(signal.SIGKILL)               # a crash: no shutdown code runs
    server.restart()                          # stop, then start on the same port and data dir

The child runs the embedded default unless told otherwise: it inherits the
parent's environment without DATABASE_URL, MESSAGE_SHARD_URLS and
REDIS_URL (which would point it at shared MariaDB or Redis), with
CHAT_DATA_DIR set to `data_dir`; whatever is in `env` is added last, so a
test can pass those variables back in on purpose. Output goes to
`<data_dir>/daphne-<port>.log`, and a server that dies or never answers
raises with the end of that log.
"""

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BACKEND_VARIABLES = ("DATABASE_URL", "MESSAGE_SHARD_URLS", "REDIS_URL")
START_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    The operating system picks it, so two test runs on one machine do not
    collide; another process could still take it before the server binds.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_environment(data_dir, env=None) -> dict[str, str]:
    """The environment a server or management command gets for `data_dir`."""
    child = {name: value for name, value in os.environ.items() if name not in BACKEND_VARIABLES}
    child["CHAT_DATA_DIR"] = str(data_dir)
    child["DJANGO_SETTINGS_MODULE"] = "chatproject.settings"
    child["PYTHONUNBUFFERED"] = "1"
    child.update(env or {})
    return child


def port_is_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def stop_pid(pid: int, sig: int = signal.SIGTERM, grace: float = STOP_GRACE_SECONDS) -> None:
    """Send `sig` to one process; SIGKILL it if it is still there after `grace` s.

    For a process this test run did not start as a Popen (so cannot wait
    on); ChatServer.stop is the usual way.
    """
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class ServerError(RuntimeError):
    pass


class ChatServer:
    def __init__(self, port: int, data_dir, env=None, host: str = "127.0.0.1"):
        self.port = port
        self.host = host
        self.data_dir = Path(data_dir)
        self.env = server_environment(self.data_dir, env)
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / f"daphne-{port}.log"

    # Addresses

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/"

    @property
    def origin(self) -> str:
        """The Origin header a browser on this server's pages sends."""
        return self.url

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    # Management commands in the server's environment

    def manage(self, *args: str, timeout: float = 120) -> str:
        """Run `manage.py ARGS` against this server's data; return its stdout."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "manage.py"), *args],
            cwd=PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise ServerError(f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result.stdout

    def migrate(self) -> None:
        self.manage("migrate_all", "--verbosity", "0")

    def shell(self, code: str) -> str:
        """Run Python code through `manage.py shell -c`; return what it printed."""
        return self.manage("shell", "--no-imports", "-c", code)

    def create_users(self, users) -> None:
        """Create users from (username, password, display_name) triples in one process."""
        rows = [tuple(str(value) for value in user) for user in users]
        self.shell(
            "from django.contrib.auth import get_user_model\n"
            f"for username, password, display_name in {rows!r}:\n"
            "    get_user_model().objects.create_user(username=username, password=password, display_name=display_name)\n"
        )

    # Process life cycle

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> "ChatServer":
        if self.running:
            raise ServerError(f"The server on port {self.port} is already running (pid {self.pid}).")
        if port_is_open(self.host, self.port):
            raise ServerError(f"Port {self.port} is taken by another process; stop it or use another port.")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"---- starting daphne on {self.url}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", self.host, "-p", str(self.port), "chatproject.asgi:application"],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so a Ctrl-C meant for pytest does
                # not reach the server before the test's own stop does.
                start_new_session=True,
            )
        try:
            self.wait_until_healthy(timeout)
        except ServerError:
            self.stop(signal.SIGKILL)
            raise
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_until_healthy(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ServerError(f"daphne on port {self.port} exited with {code}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"daphne on port {self.port} did not answer /healthz in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """Stop the server by PID; return its exit code (None if it was not started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=grace)
        return self.process.returncode

    def kill(self) -> int | None:
        return self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM, timeout: float = START_TIMEOUT_SECONDS) -> "ChatServer":
        self.stop(sig)
        # A stopped server's port can linger for a moment; wait for it.
        deadline = time.monotonic() + 5
        while port_is_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.process = None
        return self.start(timeout)

    def log_tail(self, characters: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-characters:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> "ChatServer":
        return self.start() if not self.running else self

    def __exit__(self, *exc_info) -> None:
        self.stop()


# HTTP sessions


def http_login(base_url: str, username: str, password: str) -> dict[str, str]:
    """Log in through the login form like a browser; return the cookies set.

    The result holds "sessionid" and "csrftoken" (the default cookie names);
    pass it to cookie_header() for a WebSocket handshake.
    """
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_url = f"{base_url}/accounts/login/"
    with opener.open(login_url, timeout=10) as response:
        page = response.read().decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    if match is None:
        raise ServerError("The login page has no CSRF token.")
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": match.group(1), "username": username, "password": password}
    ).encode()
    with opener.open(urllib.request.Request(login_url, data=form), timeout=10) as response:
        response.read()
    cookies = {cookie.name: cookie.value for cookie in jar}
    if "sessionid" not in cookies:
        raise ServerError(f"Logging in as {username!r} failed: no session cookie was set.")
    return cookies


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())
