"""``python -m benchmarks.cpu_split``: CPU time per message, by process, for the throughput rows.

On a machine of two cores the broker, the database server and this process share the cores; a row can
then be bound by the machine's CPU rather than by any one process. For each workload this prints the
wall time per message, this process's CPU time (both threads) and the CPU time RabbitMQ, MariaDB and
PostgreSQL spent meanwhile (``/proc/<pid>/stat``; other work on the machine counts too, so run it on
a quiet machine). Used for ``docs/performance-gaps.md``; the ratios themselves come from
``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from benchmarks.__main__ import (
	POSTGRES,
	URL,
	MariaDbDatabase,
	_discard,
	_fill,
	fresh_store,
)
from benchmarks.baseline import bodies, declare_queue, raw_consume, raw_publish
from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.consumer import Worker, WorkerOptions
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.topology import TopologyDeclarer, topology_for

SERVERS = {"RabbitMQ": "beam.smp", "MariaDB": "mariadbd", "PostgreSQL": "postgres"}
TICK = os.sysconf("SC_CLK_TCK")


def server_seconds() -> dict[str, float]:
	"""CPU seconds each server's processes have used so far."""
	used = dict.fromkeys(SERVERS, 0.0)
	for pid in filter(str.isdigit, os.listdir("/proc")):
		try:
			stat = Path(f"/proc/{pid}/stat").read_text()
		except OSError:
			continue
		name = stat[stat.index("(") + 1 : stat.rindex(")")]
		fields = stat[stat.rindex(")") + 2 :].split()
		for label, process in SERVERS.items():
			if name == process:
				used[label] += (int(fields[11]) + int(fields[12])) / TICK
	return used


def measure(label: str, count: int, work: Callable[[], None]) -> None:
	before, started, cpu = server_seconds(), time.perf_counter(), time.process_time()
	work()
	wall, ours = time.perf_counter() - started, time.process_time() - cpu
	after = server_seconds()
	servers = "  ".join(f"{name} {1e6 * (after[name] - before[name]) / count:5.0f}" for name in SERVERS)
	print(f"{label:<34} wall {1e6 * wall / count:5.0f}  this process {1e6 * ours / count:5.0f}  {servers}")


def main() -> None:
	parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_split", description=__doc__)
	parser.add_argument("--count", type=int, default=10000)
	args = parser.parse_args()
	count = args.count
	mariadb = MariaDbDatabase()
	stores = {"SQLite": f"sqlite:////tmp/eda-cpu-{uuid.uuid4().hex[:6]}.sqlite3", "MariaDB": mariadb.url}
	stores["PostgreSQL"] = POSTGRES
	connection = BrokerConnection(BrokerSettings(url=URL))
	connection.open()
	print("µs per message:")
	try:
		prefix = f"cpu-{uuid.uuid4().hex[:6]}"
		channel = connection.channel()
		declare_queue(channel, f"{prefix}.ex", f"{prefix}.raw")
		payloads = bodies(count)
		measure("raw publish, unconfirmed", count, lambda: raw_publish(URL, f"{prefix}.ex", payloads, False))
		channel.queue_purge(f"{prefix}.raw")
		_fill(f"{prefix}.raw", payloads)
		prefetch = WorkerOptions().prefetch
		measure("raw consume + ack", count, lambda: raw_consume(URL, f"{prefix}.raw", count, prefetch))
		channel.queue_delete(f"{prefix}.raw")
		channel.exchange_delete(f"{prefix}.ex")
		for label, url in stores.items():
			_publish_many(label, url, connection, count, prefix)
			_consume(label, url, connection, count, prefix)
	finally:
		connection.close()
		mariadb.drop()


def _publish_many(label: str, url: str, connection: BrokerConnection, count: int, prefix: str) -> None:
	store = fresh_store(url)
	exchange, queue = f"{prefix}.{label.lower()}.pub", f"{prefix}.{label.lower()}.pub"
	declare_queue(connection.channel(), exchange, queue)
	publisher = Publisher(connection, store, exchange=exchange)
	messages = [Message("bench.item", {"n": n, "text": "x" * 100}) for n in range(count)]

	def work() -> None:
		for chunk in range(0, count, 1000):
			publisher.publish_many(messages[chunk : chunk + 1000])

	measure(f"publish_many + record ({label})", count, work)
	publisher.close()
	channel = connection.channel()
	channel.queue_delete(queue)
	channel.exchange_delete(exchange)
	_discard(store)


def _consume(label: str, url: str, connection: BrokerConnection, count: int, prefix: str) -> None:
	store = fresh_store(url)
	registry = HandlerRegistry()
	queue, exchange = f"{prefix}.{label.lower()}", f"{prefix}.{label.lower()}.ex"
	registry.subscribe("bench.#", queue=queue, exchange=exchange)(lambda message: None)
	worker = Worker(connection, registry, store, options=WorkerOptions(poll_seconds=0.5))
	worker.declare()
	_fill(queue, bodies(count), exchange)
	measure(
		f"worker, no-op handler ({label})",
		count,
		lambda: worker.run(until=lambda s: s.handled >= count, idle_timeout=30),
	)
	worker.close()
	TopologyDeclarer(connection).delete(topology_for(registry, RetryPolicy()))
	_discard(store)


if __name__ == "__main__":
	main()
