"""Print Markdown tables from a results directory written by bench/run.py.

Usage: python bench/report.py bench/results/<run> [more result directories]

Each scenario gets one table with the baseline first; ratios are to the
baseline of the same scenario, measured in the same run.
"""

import argparse
import json
from pathlib import Path


def _value(value, digits=1):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _ratio(value, baseline):
    if not value or not baseline:
        return "–"
    return f"{value / baseline:,.1f}×"


def fanout_table(scenario: dict) -> list[str]:
    targets = scenario["targets"]
    baseline = targets.get("baseline", {})
    phase_names = [phase for phase in ("latency", "burst") if phase in scenario["phases"].split(",")]
    lines = [
        "| target | conn/s | conn CPU ms | KB/socket | latency p50 ms | p99 ms | fan-out done p99 ms "
        "| burst deliveries/s | CPU µs/delivery | × baseline | CPU ms/message | lost | dup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, report in targets.items():
        if "error" in report:
            lines.append(f"| {name} | failed: {report['error'][:80]} |" + " |" * 12)
            continue
        connect = report["connect"]
        latency = report.get("latency", {}) if "latency" in phase_names else {}
        burst = report.get("burst", {}) if "burst" in phase_names else {}
        base_burst = baseline.get("burst", {})
        per_message = (burst["server_cpu_s"] / burst["messages"] * 1e3) if burst.get("messages") else None
        lines.append(
            f"| {name} | {_value(connect['connections_per_s'], 0)} | {_value(connect['cpu_ms_per_connection'], 2)} "
            f"| {_value(connect['kb_per_socket'])} | {_value(latency.get('p50_ms'))} | {_value(latency.get('p99_ms'))} "
            f"| {_value(latency.get('fanout_complete_p99_ms'))} | {_value(burst.get('deliveries_per_s'), 0)} "
            f"| {_value(burst.get('server_cpu_us_per_delivery'))} "
            f"| {_ratio(burst.get('server_cpu_us_per_delivery'), base_burst.get('server_cpu_us_per_delivery'))} "
            f"| {_value(per_message, 2)} | {report['lost']} | {report['duplicated']} |"
        )
    return lines


def idle_table(scenario: dict) -> list[str]:
    lines = [
        "| target | sockets | conn/s | conn CPU ms | RSS after connect MB | KB/socket | idle CPU % "
        "| idle CPU ms/socket/min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, report in scenario["targets"].items():
        if "error" in report:
            lines.append(f"| {name} | failed: {report['error'][:80]} |" + " |" * 6)
            continue
        connect, idle = report["connect"], report["idle"]
        lines.append(
            f"| {name} | {_value(connect['sockets'])} | {_value(connect['connections_per_s'], 0)} "
            f"| {_value(connect['cpu_ms_per_connection'], 2)} | {_value(connect['rss_after_mb'])} "
            f"| {_value(connect['kb_per_socket'])} | {_value(idle['server_cpu_percent'])} "
            f"| {_value(idle['cpu_ms_per_socket_per_minute'], 3)} |"
        )
    return lines


def mixed_table(scenario: dict) -> list[str]:
    baseline = scenario["targets"].get("baseline", {}).get("mixed", {})
    lines = [
        "| target | messages/s | deliveries/s | server CPU % | CPU µs/delivery | × baseline | p50 ms | p99 ms "
        "| lost | dup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, report in scenario["targets"].items():
        if "error" in report:
            lines.append(f"| {name} | failed: {report['error'][:80]} |" + " |" * 8)
            continue
        mixed = report["mixed"]
        lines.append(
            f"| {name} | {_value(mixed['messages_per_s'])} | {_value(mixed['deliveries_per_s'], 0)} "
            f"| {_value(mixed['server_cpu_percent'])} | {_value(mixed['server_cpu_us_per_delivery'])} "
            f"| {_ratio(mixed['server_cpu_us_per_delivery'], baseline.get('server_cpu_us_per_delivery'))} "
            f"| {_value(mixed['p50_ms'])} | {_value(mixed['p99_ms'])} | {report['lost']} | {report['duplicated']} |"
        )
    return lines


def render(directory: Path) -> str:
    output = []
    for path in sorted(directory.glob("*.json")):
        if path.name == "summary.json":
            continue
        scenario = json.loads(path.read_text(encoding="utf-8"))
        phases = scenario["phases"].split(",")
        output.append(f"### {scenario['scenario']} ({scenario['users']} users, rooms: {scenario['room_sizes']})\n")
        if "mixed" in phases:
            output.extend(mixed_table(scenario))
        elif phases == ["idle"]:
            output.extend(idle_table(scenario))
        else:
            output.extend(fanout_table(scenario))
        output.append("")
    return "\n".join(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directories", nargs="+", help="Result directories written by bench/run.py.")
    args = parser.parse_args()
    for directory in args.directories:
        print(render(Path(directory)))


if __name__ == "__main__":
    main()
