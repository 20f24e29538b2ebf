"""Run the WebSocket benchmark scenarios against the chat server and the baseline.

    python bench/run.py quick            # `make bench`: about a minute
    python bench/run.py full             # `make bench-full`: every scenario, plot
    python bench/run.py full --only fanout-1000,idle-10000

For each scenario the harness builds one SQLite template (migrate_all plus
create_load_users), then for each target copies it to a fresh data
directory, starts the server processes, runs bench/loadgen.py as a separate
process and stops the servers by PID. Targets are the baseline
(bench/baseline_server.py) and the chat server under daphne or uvicorn
with the in-memory layer, RedisPubSubChannelLayer or RedisChannelLayer.
Redis targets need MySQL/MariaDB (outside the embedded default the
settings accept only mysql:// database URLs): the harness recreates the
databases bench_main, bench_shard_0 and bench_shard_1 on --mysql-url once
per scenario and empties their message tables before each target. They use
a private redis-server on --redis-port unless --redis-url names one; the
harness empties only that Redis database.

Results go to bench/results/<time>-<mode>/ (one JSON file per scenario,
summary.json and, in full mode, fanout.png). The last stdout line is one
JSON object with the headline figures of the run.
"""

import argparse
import hashlib
import json
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = REPO / "bench" / "results"
SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 10.0
PRODUCT_PACKAGES = ("chatproject", "accounts", "rooms", "messaging", "presence")

logger = logging.getLogger("bench.run")

MYSQL_DATABASES = ("bench_main", "bench_shard_0", "bench_shard_1")
# The collation chatproject.databases configures connections with (MariaDB 10.10+).
MYSQL_COLLATION = "utf8mb4_uca1400_as_ci"
# Tables emptied between targets that share one MySQL template.
MYSQL_RESET_TABLES = ("messaging_message", "messaging_roomsequence", "messaging_workerlease")
LAYER_BACKENDS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "redis": "channels_redis.core.RedisChannelLayer",
}


@dataclass
class Target:
    """One server configuration that a scenario measures."""

    name: str
    server: str  # baseline, daphne or uvicorn
    layer: str = "memory"  # memory, pubsub or redis
    processes: int = 1
    app: str = "chatproject.asgi:application"
    env: dict = field(default_factory=dict)
    server_args: list = field(default_factory=list)
    loadgen_args: list = field(default_factory=list)


@dataclass
class Scenario:
    name: str
    users: int
    room_sizes: str
    phases: str
    loadgen_args: list
    targets: list
    # Room size plotted on the x axis of fanout.png, for one-room scenarios.
    room_size: int | None = None


BASELINE = Target("baseline", "baseline")
# The baseline's broadcast as a bare ASGI app: the ASGI server's own cost.
DAPHNE_FLOOR = Target("daphne-floor", "daphne", app="bench.asgi_floor:application")
UVICORN_FLOOR = Target("uvicorn-floor", "uvicorn", app="bench.asgi_floor:application")
DAPHNE_MEMORY = Target("daphne-memory", "daphne")
UVICORN_MEMORY = Target("uvicorn-memory", "uvicorn")
DAPHNE_PUBSUB = Target("daphne-pubsub", "daphne", layer="pubsub")
UVICORN_PUBSUB = Target("uvicorn-pubsub", "uvicorn", layer="pubsub")
DAPHNE_REDIS = Target("daphne-redis", "daphne", layer="redis")


def code_fingerprint() -> str:
    """Return a short hash of the product's Python sources as they are on disk now.

    The working tree can change between targets of one run, so each result
    records the code it measured.
    """
    digest = hashlib.sha256()
    for package in PRODUCT_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def with_args(target: Target, *loadgen_args: str) -> Target:
    return Target(**{**target.__dict__, "loadgen_args": [*target.loadgen_args, *loadgen_args]})


def fanout(size: int, targets: list, latency: int, burst: int, slow_burst: int | None = None) -> Scenario:
    """Build a scenario with one room of `size` members, all connected: latency, then a burst."""
    slow = [] if slow_burst is None else ["--burst-messages", str(slow_burst)]
    return Scenario(
        name=f"fanout-{size}",
        users=size,
        room_sizes=str(size),
        phases="idle,latency,burst",
        loadgen_args=[
            "--idle-seconds", "3",
            "--latency-messages", str(latency),
            "--burst-messages", str(burst),
            "--burst-senders", str(min(size, 20)),
        ],
        targets=[with_args(target, *slow) if target.layer == "memory" and target.server != "baseline" else target
                 for target in targets],
        room_size=size,
    )


def quick_scenarios() -> list[Scenario]:
    scenario = fanout(1000, [BASELINE, DAPHNE_FLOOR, DAPHNE_MEMORY, UVICORN_MEMORY], latency=15, burst=100)
    scenario.name = "quick-fanout-1000"
    return [scenario]


def full_scenarios() -> list[Scenario]:
    sweep_targets = [BASELINE, DAPHNE_MEMORY, DAPHNE_PUBSUB, UVICORN_PUBSUB]
    return [
        fanout(10, sweep_targets, latency=30, burst=200),
        fanout(100, sweep_targets, latency=30, burst=200),
        fanout(
            1000,
            [BASELINE, DAPHNE_FLOOR, UVICORN_FLOOR, DAPHNE_MEMORY, UVICORN_MEMORY, DAPHNE_PUBSUB, UVICORN_PUBSUB,
             DAPHNE_REDIS],
            latency=20,
            burst=100,
        ),
        fanout(
            5000,
            [
                BASELINE,
                DAPHNE_FLOOR,
                UVICORN_FLOOR,
                DAPHNE_MEMORY,
                UVICORN_MEMORY,
                DAPHNE_PUBSUB,
                UVICORN_PUBSUB,
            ],
            latency=10,
            burst=40,
        ),
        Scenario(
            name="idle-10000",
            users=10000,
            room_sizes="mixed",
            phases="idle",
            # The revalidation sweep visits one socket every 120 s / sockets
            # from the first, so 40 s show its steady idle cost.
            # Only one retry pass, because a server that rejects handshakes
            # here is saturated and more passes only lengthen the run.
            loadgen_args=["--idle-seconds", "40", "--connect-concurrency", "100", "--connect-retries", "1"],
            targets=[BASELINE, DAPHNE_FLOOR, UVICORN_FLOOR, DAPHNE_MEMORY, DAPHNE_PUBSUB, UVICORN_MEMORY],
        ),
        Scenario(
            name="mixed-3000",
            users=3000,
            room_sizes="mixed",
            phases="mixed",
            loadgen_args=["--mixed-rate", "10", "--mixed-seconds", "20", "--message-timeout", "60"],
            targets=[BASELINE, DAPHNE_MEMORY, DAPHNE_PUBSUB, UVICORN_PUBSUB, DAPHNE_REDIS],
        ),
        Scenario(
            name="scale-3000",
            users=3000,
            room_sizes="3000",
            phases="latency,burst",
            loadgen_args=["--latency-messages", "10", "--burst-messages", "60", "--burst-senders", "20"],
            targets=[
                BASELINE,
                DAPHNE_PUBSUB,
                Target("daphne-pubsub-x3", "daphne", layer="pubsub", processes=3),
                DAPHNE_REDIS,
                Target("daphne-redis-x3", "daphne", layer="redis", processes=3),
            ],
        ),
        Scenario(
            name="deflate-1000",
            users=1000,
            room_sizes="1000",
            phases="latency,burst",
            loadgen_args=["--latency-messages", "20", "--burst-messages", "100", "--burst-senders", "20"],
            targets=[
                BASELINE,
                Target("baseline-deflate", "baseline", server_args=["--per-message-deflate"],
                       loadgen_args=["--compression", "deflate"]),
                UVICORN_PUBSUB,
                Target("uvicorn-pubsub-deflate", "uvicorn", layer="pubsub", loadgen_args=["--compression", "deflate"]),
                DAPHNE_PUBSUB,
                Target("daphne-pubsub-deflate-offer", "daphne", layer="pubsub",
                       loadgen_args=["--compression", "deflate"]),
            ],
        ),
    ]


def experiment_scenarios() -> list[Scenario]:
    """Changes to the hot path not taken, or taken and measured against their absence."""
    experiment = "bench.experiments.asgi:application"
    return [
        Scenario(
            name="experiments-1000",
            users=1000,
            room_sizes="1000",
            phases="latency,burst",
            loadgen_args=["--latency-messages", "20", "--burst-messages", "100", "--burst-senders", "20"],
            targets=[
                BASELINE,
                DAPHNE_MEMORY,
                Target("daphne-memory-throttled-clean", "daphne",
                       env={"DJANGO_SETTINGS_MODULE": "bench.experiments.settings_throttled_layer"}),
                Target("daphne-memory-gc-default", "daphne", app=experiment, env={"BENCH_GC": "default"}),
            ],
        ),
        # The garbage collector where the heap is largest: 5,000 sockets.
        Scenario(
            name="experiments-gc-5000",
            users=5000,
            room_sizes="5000",
            phases="latency,burst",
            loadgen_args=["--latency-messages", "10", "--burst-messages", "40", "--burst-senders", "20"],
            targets=[
                BASELINE,
                Target("uvicorn-pubsub", "uvicorn", layer="pubsub", app=experiment,
                       env={"BENCH_GC_STATS": "gc-stats.json"}),
                Target("uvicorn-pubsub-gc-default", "uvicorn", layer="pubsub", app=experiment,
                       env={"BENCH_GC": "default", "BENCH_GC_STATS": "gc-stats.json"}),
            ],
        ),
    ]


class Harness:
    def __init__(self, args):
        self.args = args
        self.data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="chat-bench-")).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.next_offset = 0
        self.redis_process: subprocess.Popen | None = None
        self.redis_url = args.redis_url
        self.secret_key: str | None = None

    # Processes

    def _free_port(self) -> int:
        """Return the next port above --port-base that nothing listens on, in turn."""
        for step in range(90):
            offset = (self.next_offset + step) % 90
            port = self.args.port_base + 1 + offset
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            self.next_offset = offset + 1
            return port
        raise RuntimeError(f"No free port between {self.args.port_base + 1} and {self.args.port_base + 90}.")

    @staticmethod
    def _wait_for_port(port: int, process: subprocess.Popen, log_path: Path) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"Server on port {port} exited with {process.returncode}; see {log_path}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"Server on port {port} did not listen within {SERVER_START_TIMEOUT:.0f} s; see {log_path}")

    @staticmethod
    def _stop(process: subprocess.Popen) -> None:
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning("PID %d ignored SIGTERM for %.0f s; killing it", process.pid, SERVER_STOP_TIMEOUT)
            process.kill()
            process.wait()

    def start_redis(self) -> None:
        if self.redis_url or self.redis_process:
            return
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed; install it or pass --redis-url.")
        port = self.args.redis_port
        log_path = self.data_dir / "redis.log"
        self.redis_process = subprocess.Popen(
            [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--maxclients", "20000"],
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_for_port(port, self.redis_process, log_path)
        self.redis_url = f"redis://127.0.0.1:{port}/4"
        logger.info("Started redis-server PID %d on port %d", self.redis_process.pid, port)

    def flush_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        client.flushdb()
        client.close()

    def close(self) -> None:
        if self.redis_process is not None:
            self._stop(self.redis_process)
            self.redis_process = None

    # Scenario steps

    def _manage(self, env: dict, *command: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL
        )

    def build_template(self, scenario: Scenario) -> Path:
        template = self.data_dir / scenario.name / "template"
        if template.exists():
            shutil.rmtree(template)
        template.mkdir(parents=True)
        env = self._base_env(template)
        started = time.monotonic()
        self._manage(env, "migrate_all", "--verbosity", "0")
        self._manage(
            env, "create_load_users", str(scenario.users), "--room-sizes", scenario.room_sizes,
            "--output", str(template / "users.json"),
        )
        logger.info("Built %s: %d users in %.1f s", template, scenario.users, time.monotonic() - started)
        return template

    @staticmethod
    def _base_env(data_dir: Path) -> dict:
        env = {key: value for key, value in os.environ.items()
               if key not in ("DATABASE_URL", "MESSAGE_SHARD_URLS", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
        env["CHAT_DATA_DIR"] = str(data_dir)
        env["PYTHONUNBUFFERED"] = "1"
        # The embedded default turns DEBUG on, which records every query
        # and, on SQLite, runs one more to quote its parameters. Production
        # runs with DEBUG off, so the benchmark does too.
        env["DJANGO_DEBUG"] = "false"
        return env

    def _mysql_url(self, name: str) -> str:
        return f"{self.args.mysql_url.rstrip('/')}/{name}"

    def _redis_env(self, data_dir: Path) -> dict:
        env = self._base_env(data_dir)
        # Outside the embedded default the settings need MySQL databases,
        # the secret key and the allowed hosts named explicitly.
        env["DATABASE_URL"] = self._mysql_url(MYSQL_DATABASES[0])
        env["MESSAGE_SHARD_URLS"] = ",".join(self._mysql_url(name) for name in MYSQL_DATABASES[1:])
        env["REDIS_URL"] = self.redis_url
        env["DJANGO_SECRET_KEY"] = self.secret_key
        env["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1,localhost"
        return env

    def _target_env(self, target: Target, run_dir: Path) -> dict:
        if target.layer == "memory":
            env = self._base_env(run_dir)
        else:
            env = self._redis_env(run_dir)
            env["CHANNEL_LAYER_BACKEND"] = LAYER_BACKENDS[target.layer]
        env.update(target.env)
        return env

    def _mysql(self):
        import MySQLdb

        parts = urlsplit(self.args.mysql_url)
        return MySQLdb.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            charset="utf8mb4",
        )

    def build_mysql_template(self, scenario: Scenario) -> Path:
        """Recreate the bench_ databases with the scenario's users; return the users file."""
        self.start_redis()
        self.flush_redis()
        connection = self._mysql()
        try:
            cursor = connection.cursor()
            for name in MYSQL_DATABASES:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
                cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE {MYSQL_COLLATION}")
        finally:
            connection.close()
        data_dir = self.data_dir / scenario.name / "mysql-template"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = self._redis_env(data_dir)
        started = time.monotonic()
        self._manage(env, "migrate_all", "--verbosity", "0")
        users_path = data_dir / "users.json"
        self._manage(
            env, "create_load_users", str(scenario.users), "--room-sizes", scenario.room_sizes,
            "--output", str(users_path),
        )
        logger.info("Built MySQL template: %d users in %.1f s", scenario.users, time.monotonic() - started)
        return users_path

    def reset_mysql_state(self) -> None:
        connection = self._mysql()
        try:
            cursor = connection.cursor()
            for name in MYSQL_DATABASES:
                cursor.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (name,)
                )
                present = {row[0] for row in cursor.fetchall()}
                for table in MYSQL_RESET_TABLES:
                    if table in present:
                        cursor.execute(f"TRUNCATE TABLE `{name}`.`{table}`")
        finally:
            connection.close()

    def _server_command(self, target: Target, port: int, users_path: Path) -> list[str]:
        if target.server == "baseline":
            return [sys.executable, str(REPO / "bench" / "baseline_server.py"), "--port", str(port),
                    "--users", str(users_path), "--origin", f"http://127.0.0.1:{port}", *target.server_args]
        if target.server == "daphne":
            return [sys.executable, str(REPO / "bench" / "daphne_without_click.py"), "-b", "127.0.0.1", "-p", str(port),
                    *target.server_args, target.app]
        if target.server == "uvicorn":
            return [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--lifespan", "off",
                    *target.server_args, target.app]
        raise ValueError(f"Unknown server {target.server!r}")

    def run_target(self, scenario: Scenario, target: Target, template: Path, mysql_users: Path | None) -> dict:
        run_dir = self.data_dir / scenario.name / target.name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copytree(template, run_dir)
        users_path = run_dir / "users.json"
        if target.layer != "memory":
            self.flush_redis()
            self.reset_mysql_state()
            users_path = mysql_users
        env = self._target_env(target, run_dir)
        env["BENCH_USERS"] = str(users_path)
        gc_stats_path = None
        if "BENCH_GC_STATS" in env:
            gc_stats_path = run_dir / env["BENCH_GC_STATS"]
            env["BENCH_GC_STATS"] = str(gc_stats_path)

        processes = []
        urls = []
        fingerprint = code_fingerprint()
        try:
            for index in range(target.processes):
                port = self._free_port()
                log_path = run_dir / f"server-{index}.log"
                process = subprocess.Popen(
                    self._server_command(target, port, users_path),
                    cwd=REPO, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                )
                processes.append(process)
                self._wait_for_port(port, process, log_path)
                urls.append(f"ws://127.0.0.1:{port}/ws/")
            command = [sys.executable, str(REPO / "bench" / "loadgen.py"), "--users", str(users_path),
                       "--sockets", str(scenario.users), "--phases", scenario.phases, *scenario.loadgen_args,
                       *target.loadgen_args]
            for url in urls:
                command += ["--url", url]
            for process in processes:
                command += ["--server-pid", str(process.pid)]
            logger.info("%s / %s: %s on %s", scenario.name, target.name, target.server, ", ".join(urls))
            started = time.monotonic()
            with (run_dir / "loadgen.log").open("w") as loadgen_log:
                completed = subprocess.run(
                    command, cwd=REPO, stdout=subprocess.PIPE, stderr=loadgen_log, text=True,
                    timeout=self.args.target_timeout,
                )
            if completed.returncode != 0:
                raise RuntimeError(f"loadgen exited with {completed.returncode}; see {run_dir / 'loadgen.log'}")
            report = json.loads(completed.stdout.strip().splitlines()[-1])
            report["target_seconds"] = round(time.monotonic() - started, 1)
        finally:
            for process in processes:
                self._stop(process)
        if gc_stats_path is not None and gc_stats_path.exists():
            report["gc"] = json.loads(gc_stats_path.read_text(encoding="utf-8"))
        report["target"] = {
            "server": target.server, "layer": target.layer, "processes": target.processes, "app": target.app,
            "env": target.env, "server_args": target.server_args, "code_fingerprint": fingerprint,
        }
        return report

    def run_scenario(self, scenario: Scenario) -> dict:
        template = self.build_template(scenario)
        self.secret_key = (template / "dev-secret-key").read_text(encoding="utf-8").strip()
        mysql_users = None
        if any(target.layer != "memory" for target in scenario.targets):
            mysql_users = self.build_mysql_template(scenario)
        results = {"scenario": scenario.name, "users": scenario.users, "room_sizes": scenario.room_sizes,
                   "room_size": scenario.room_size, "phases": scenario.phases, "targets": {}}
        for target in scenario.targets:
            try:
                results["targets"][target.name] = self.run_target(scenario, target, template, mysql_users)
            except (RuntimeError, subprocess.TimeoutExpired, subprocess.CalledProcessError, ValueError) as error:
                logger.error("%s / %s failed: %s", scenario.name, target.name, error)
                results["targets"][target.name] = {"error": str(error)}
            print_target_line(scenario.name, target.name, results["targets"][target.name])
        return results


def print_target_line(scenario: str, target: str, report: dict) -> None:
    if "error" in report:
        print(f"{scenario:20} {target:32} ERROR {report['error']}", file=sys.stderr)
        return
    parts = []
    connect = report.get("connect", {})
    parts.append(f"conn/s={connect.get('connections_per_s')} conn_cpu_ms={connect.get('cpu_ms_per_connection')} "
                 f"kb/sock={connect.get('kb_per_socket')}")
    for phase in ("latency", "burst", "mixed"):
        if phase in report:
            data = report[phase]
            parts.append(f"{phase}: p50={data['p50_ms']} p99={data['p99_ms']} deliv/s={data['deliveries_per_s']} "
                         f"cpu_us/deliv={data['server_cpu_us_per_delivery']}")
    if "idle" in report:
        parts.append(f"idle cpu%={report['idle']['server_cpu_percent']}")
    parts.append(f"lost={report['lost']} dup={report['duplicated']}")
    print(f"{scenario:20} {target:32} " + " | ".join(parts), file=sys.stderr, flush=True)


def headline(results: list[dict], target_name: str, preferred: str = "fanout-1000") -> dict:
    """Return the headline figures of `target_name` and the baseline, from `preferred` or the first scenario with both."""
    ordered = sorted(results, key=lambda scenario: scenario["scenario"] != preferred)
    for scenario in ordered:
        targets = scenario["targets"]
        server, baseline = targets.get(target_name, {}), targets.get("baseline", {})
        if "burst" in server and "burst" in baseline:
            break
    else:
        return {"error": f"no scenario measured both {target_name} and the baseline"}
    server_cpu = server["burst"]["server_cpu_us_per_delivery"]
    baseline_cpu = baseline["burst"]["server_cpu_us_per_delivery"]
    return {
        "scenario": scenario["scenario"],
        "server": target_name,
        "sockets": server["connect"]["sockets"],
        "deliveries_per_s": server["burst"]["deliveries_per_s"],
        "baseline_deliveries_per_s": baseline["burst"]["deliveries_per_s"],
        "server_cpu_us_per_delivery": server_cpu,
        "baseline_cpu_us_per_delivery": baseline_cpu,
        "ratio_to_baseline": round(server_cpu / baseline_cpu, 1) if server_cpu and baseline_cpu else None,
        "p50_ms": server["latency"]["p50_ms"],
        "p99_ms": server["latency"]["p99_ms"],
        "baseline_p99_ms": baseline["latency"]["p99_ms"],
        "kb_per_socket": server["connect"]["kb_per_socket"],
        "baseline_kb_per_socket": baseline["connect"]["kb_per_socket"],
        "connect_cpu_ms": server["connect"]["cpu_ms_per_connection"],
        "baseline_connect_cpu_ms": baseline["connect"]["cpu_ms_per_connection"],
        "lost": server["lost"],
        "duplicated": server["duplicated"],
    }


def plot(results_dir: Path, output: Path) -> bool:
    """Plot latency and CPU per delivery against room size from the fan-out scenarios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, dict]]] = {}
    for path in sorted(results_dir.glob("fanout-*.json")):
        scenario = json.loads(path.read_text(encoding="utf-8"))
        for name, report in scenario["targets"].items():
            if "latency" in report and "burst" in report:
                series.setdefault(name, []).append((scenario["room_size"], report))
    if not series:
        return False
    figure, (latency_axis, cpu_axis) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, points in sorted(series.items()):
        points.sort(key=lambda point: point[0])
        sizes = [size for size, _ in points]
        line, = latency_axis.plot(sizes, [report["latency"]["p99_ms"] for _, report in points], marker="o",
                                  label=f"{name} p99")
        latency_axis.plot(sizes, [report["latency"]["p50_ms"] for _, report in points], marker=".",
                          linestyle="--", color=line.get_color(), label=f"{name} p50")
        cpu_axis.plot(sizes, [report["burst"]["server_cpu_us_per_delivery"] for _, report in points], marker="o",
                      label=name)
    latency_axis.axhline(60, color="grey", linewidth=0.8, linestyle=":")
    for axis in (latency_axis, cpu_axis):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("sockets in the room")
        axis.grid(True, which="both", linewidth=0.3)
    latency_axis.set_ylabel("send-to-delivery latency, one message at a time (ms)")
    latency_axis.set_title("Latency (dotted line: 60 ms target)")
    cpu_axis.set_ylabel("server CPU per delivery in a burst (µs)")
    cpu_axis.set_title("Server CPU per delivered message")
    latency_axis.legend(fontsize=7)
    cpu_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return True


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("quick", "full", "experiments"), help="Scenario set to run.")
    parser.add_argument("--only", help="Comma-separated scenario names to run from the set.")
    parser.add_argument("--data-dir", help="Directory for databases and logs (default: a new temporary one).")
    parser.add_argument("--results-dir", help="Directory for result files (default: bench/results/<time>-<mode>).")
    parser.add_argument("--port-base", type=int, default=18400, help="Servers listen on the 90 ports above it.")
    parser.add_argument("--redis-port", type=int, default=18479, help="Port of the private redis-server.")
    parser.add_argument("--redis-url", help="Use this Redis (database included) instead of a private one.")
    parser.add_argument(
        "--mysql-url",
        default="mysql://root@127.0.0.1:3306",
        help="MySQL/MariaDB server for the Redis targets, without a database name; the harness recreates "
        "the databases bench_main, bench_shard_0 and bench_shard_1 there.",
    )
    parser.add_argument("--target-timeout", type=float, default=900.0, help="Seconds one target may take.")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 12000:
        logger.warning("The open-files limit is %d; the 10,000-socket scenario needs about 10,100.", hard)

    scenarios = {"quick": quick_scenarios, "full": full_scenarios, "experiments": experiment_scenarios}[args.mode]()
    if args.only:
        requested = set(args.only.split(","))
        unknown = requested - {scenario.name for scenario in scenarios}
        if unknown:
            raise SystemExit(f"Unknown scenario {', '.join(sorted(unknown))} for mode {args.mode}.")
        scenarios = [scenario for scenario in scenarios if scenario.name in requested]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir = Path(args.results_dir) if args.results_dir else RESULTS / f"{stamp}-{args.mode}"
    results_dir.mkdir(parents=True, exist_ok=True)

    harness = Harness(args)
    results = []
    try:
        for scenario in scenarios:
            result = harness.run_scenario(scenario)
            (results_dir / f"{scenario.name}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
            results.append(result)
    finally:
        harness.close()

    summary = headline(results, "daphne-memory")
    (results_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    if args.mode == "full" and plot(results_dir, results_dir / "fanout.png"):
        logger.info("Wrote %s", results_dir / "fanout.png")
    logger.info("Results in %s", results_dir)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
