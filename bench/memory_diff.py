"""Show where memory grew between two tracemalloc snapshots, per socket.

Usage: python bench/memory_diff.py BEFORE.pickle AFTER.pickle --sockets N [--top 25]

The snapshots come from a server run with BENCH_TRACEMALLOC
(bench/experiments/asgi.py). Lines are grouped by the innermost frame of
the project or library code that allocated them.
"""

import argparse
import tracemalloc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\\n\\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--sockets", type=int, required=True, help="Sockets opened between the two snapshots.")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--group", choices=("lineno", "filename", "traceback"), default="lineno")
    args = parser.parse_args()
    before = tracemalloc.Snapshot.load(args.before)
    after = tracemalloc.Snapshot.load(args.after)
    differences = after.compare_to(before, args.group)
    total = sum(difference.size_diff for difference in differences)
    print(f"total {total / 1024 / args.sockets:.2f} KB per socket over {args.sockets} sockets")
    for difference in differences[: args.top]:
        frame = difference.traceback[0]
        print(
            f"{difference.size_diff / args.sockets:9.0f} B/socket {difference.count_diff / args.sockets:7.2f} blocks"
            f"  {frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
        )
        if args.group == "traceback":
            for inner in difference.traceback[1:]:
                print(f"{'':38}{inner.filename.split('site-packages/')[-1]}:{inner.lineno}")


if __name__ == "__main__":
    main()
