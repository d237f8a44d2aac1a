"""Handler for the outbox benchmark: appends (handler start - commit time) to a file per message."""

import os
import time

from frappe_eda.messaging import subscribe

QUEUE = os.environ.get("EDA_BENCH_QUEUE", "eda-bench.latency")
EXCHANGE = os.environ.get("EDA_BENCH_EXCHANGE", "eda-bench.events")
OUT = os.environ.get("EDA_BENCH_OUT", "/tmp/eda-outbox-latency.txt")


@subscribe("bench.#", queue=QUEUE, exchange=EXCHANGE)
def measure(message):
	with open(OUT, "a") as out:
		out.write(f"{time.time() - message.payload['committed_at']:.6f}\n")
