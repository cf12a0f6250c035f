"""A worker in a process of its own, for the kill -9 and SIGTERM tests.

    python worker_proc.py URL QUEUE MARKER_DIR SLEEP_SECONDS LOCK_SECONDS

Its handler writes MARKER_DIR/started-<id>, sleeps, then writes MARKER_DIR/done-<id>."""
import sys
import time
from pathlib import Path

import rmq

url, queue, marker, sleep_s, lock_s = sys.argv[1:6]
worker = rmq.Worker(url, queue, lock=float(lock_s), grace=10, concurrency=2)


@worker.handler()
def handle(m: rmq.Message) -> None:
    Path(marker, f"started-{m.id}").write_text(str(m.attempt))
    time.sleep(float(sleep_s))
    Path(marker, f"done-{m.id}").write_text(str(m.attempt))


report = worker.run()
print(f"acked={report.acked} abandoned={report.abandoned}", flush=True)
