"""The project's ASGI application with benchmark switches read from the environment.

BENCH_GC=default        undo the collector tuning of chatproject/asgi.py:
                        gc.unfreeze() and Python's default thresholds.
BENCH_GC_STATS=PATH     write collection counts and seconds per generation
                        to PATH as JSON when the process exits.
BENCH_TRACEMALLOC=DIR   trace allocations (8 frames deep) and write a
                        snapshot to DIR/snapshot-N.pickle on each SIGUSR1;
                        compare two with bench/memory_diff.py.

NOTE: the statistics are written by an atexit hook, so a server that the
harness has to kill after its stop timeout leaves no file. In earlier
runs, uvicorn with 5,000 sockets wrote none.
"""

import atexit
import gc
import json
import os
import signal
import time
import tracemalloc

from chatproject.asgi import application  # noqa: F401  (served by this module)

GC_MODE = os.environ.get("BENCH_GC", "")
if GC_MODE not in ("", "default"):
    raise RuntimeError(f"BENCH_GC={GC_MODE!r} is invalid; use default.")
if GC_MODE == "default":
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)

_stats_path = os.environ.get("BENCH_GC_STATS")
if _stats_path:
    _seconds = [0.0, 0.0, 0.0]
    _started = [0.0]

    def _time_collection(phase, info):
        if phase == "start":
            _started[0] = time.perf_counter()
        else:
            _seconds[info["generation"]] += time.perf_counter() - _started[0]

    def _write_stats():
        stats = gc.get_stats()
        with open(_stats_path, "w", encoding="utf-8") as file:
            json.dump({"seconds": _seconds, "collections": [entry["collections"] for entry in stats]}, file)

    gc.callbacks.append(_time_collection)
    atexit.register(_write_stats)

_snapshot_dir = os.environ.get("BENCH_TRACEMALLOC")
if _snapshot_dir:
    tracemalloc.start(8)
    _snapshot_count = [0]

    def _write_snapshot(signum, frame):
        gc.collect()
        _snapshot_count[0] += 1
        tracemalloc.take_snapshot().dump(os.path.join(_snapshot_dir, f"snapshot-{_snapshot_count[0]}.pickle"))

    signal.signal(signal.SIGUSR1, _write_snapshot)
