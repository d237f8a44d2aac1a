"""A worker in a process of its own, for the latency and memory benchmarks.

``latency``: the handler writes ``phase seconds`` (handler start minus the publisher's ``sent_at``) per
message and stops at the "end" message. ``memory``: a no-op handler; RSS is written after 10k messages
and after the total.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.consumer import Worker, WorkerOptions, WorkerStats
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.stores import open_store


def rss_kib() -> int:
	for line in Path("/proc/self/status").read_text().splitlines():
		if line.startswith("VmRSS:"):
			return int(line.split()[1])
	return 0


def main() -> None:
	mode, url, store_url, queue, exchange, out = sys.argv[1:7]
	registry = HandlerRegistry()
	lines: list[str] = []
	finished = {"done": False}

	def measure(message: Message) -> None:
		latency = time.time() - message.payload["sent_at"]
		if message.payload["phase"] == "end":
			finished["done"] = True
		else:
			lines.append(f"{message.payload['phase']} {latency:.6f}")

	registry.subscribe("bench.#", queue=queue, exchange=exchange)(
		measure if mode == "latency" else lambda m: None
	)
	store = open_store(store_url)
	with BrokerConnection(BrokerSettings(url=url)) as connection:
		worker = Worker(connection, registry, store, options=WorkerOptions(poll_seconds=0.05))
		if mode == "latency":
			worker.run(until=lambda s: finished["done"])
			Path(out).write_text("\n".join(lines) + "\n")
		else:
			total = int(sys.argv[7])
			marks: dict[int, int] = {}

			def until(stats: WorkerStats) -> bool:
				for mark in (10_000, total):
					if stats.handled >= mark and mark not in marks:
						marks[mark] = rss_kib()
				return stats.handled >= total

			worker.run(until=until)
			Path(out).write_text("".join(f"{mark} {rss}\n" for mark, rss in sorted(marks.items())))
		worker.close()
	store.close()


if __name__ == "__main__":
	main()
