"""The Frappe worker measured against a bare loop on the same site:
``bench --site SITE execute frappe_eda.consumer.benchmark.run --kwargs '{"count": 1000, "rounds": 3}'``.

Per round:

1. a bare loop inserts ``count`` ToDos with one commit each (what a script or a request does);
2. ``count`` messages are published to a queue whose handler inserts the same ToDo, and a real ``bench
   eda worker --no-relay --queue Q`` drains it; the rate is taken between the first and the last EDA
   Message recorded Processed, so the worker's start-up is left out;
3. ``count`` messages to a queue whose handler does nothing, drained by a second worker the same way.

It prints each round and the medians: the insert-handler rate over the bare loop's (the target is at
least 0.7x) and the no-op rate in messages a second (the target is at least 500/s). It commits, and
deletes what it created (ToDos, EDA Messages, the queues).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time

import frappe

from frappe_eda.consumer import eda_command
from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.topology import TopologyDeclarer, topology_for
from frappe_eda.settings import load_settings

TIMEOUT = 600
HANDLERS = "frappe_eda.tests.worker_bench_handlers"


def run(count: int = 1000, rounds: int = 3) -> dict:
	results = [_round(int(count)) for _ in range(max(1, int(rounds)))]
	summary = {
		"count": int(count),
		"rounds": len(results),
		"bare_per_s": statistics.median(r["bare_per_s"] for r in results),
		"insert_handler_per_s": statistics.median(r["insert_handler_per_s"] for r in results),
		"insert_ratio": statistics.median(r["insert_ratio"] for r in results),
		"noop_per_s": statistics.median(r["noop_per_s"] for r in results),
		"ratios": [round(r["insert_ratio"], 3) for r in results],
		"noop_rates": [round(r["noop_per_s"]) for r in results],
		"batch_size": load_settings().batch_size,
	}
	print(
		f"median of {len(results)} rounds of {count}: bare loop {summary['bare_per_s']:.0f}/s, worker "
		f"inserting {summary['insert_handler_per_s']:.0f}/s = {summary['insert_ratio']:.2f}x "
		f"{summary['ratios']}; no-op handler {summary['noop_per_s']:.0f}/s {summary['noop_rates']} "
		f"(messages per transaction: {summary['batch_size']})"
	)
	return summary


def _round(count: int) -> dict:
	tag = frappe.generate_hash(length=6).lower()
	prefix, exchange = f"eda-worker-bench-{tag}", f"eda-worker-bench-{tag}.events"
	env = {
		**os.environ,
		"EDA_HANDLER_MODULES": HANDLERS,
		"EDA_WORKER_BENCH_PREFIX": prefix,
		"EDA_WORKER_BENCH_EXCHANGE": exchange,
	}
	settings = load_settings()
	queues = [f"{prefix}.insert", f"{prefix}.noop"]
	result: dict = {}
	try:
		started = time.perf_counter()
		for n in range(count):
			frappe.get_doc({"doctype": "ToDo", "description": f"{prefix} bare {n}"}).insert()
			frappe.db.commit()
		result["bare_per_s"] = count / (time.perf_counter() - started)
		registry = _registry(prefix, exchange)
		with BrokerConnection(settings.broker) as connection:
			TopologyDeclarer(connection).declare(
				topology_for(list(registry), settings.retry, settings.queue_type)
			)
			publisher = Publisher(connection, exchange=exchange, source=frappe.local.site)
			publisher.publish_many(
				[
					Message(type="insert.todo", payload={"description": f"{prefix} via worker {n}"})
					for n in range(count)
				],
				routing_key="insert.todo",
			).raise_first()
			publisher.publish_many(
				[Message(type="noop.message", payload={"n": n}) for n in range(count)],
				routing_key="noop.message",
			).raise_first()
		for queue in queues:  # one queue at a time, so each rate is the worker's alone
			_drain_with_worker(queue, count, env)
		result["insert_handler_per_s"] = _rate(queues[0], count)
		result["noop_per_s"] = _rate(queues[1], count)
		result["insert_ratio"] = result["insert_handler_per_s"] / result["bare_per_s"]
	finally:
		frappe.db.rollback()
		frappe.db.delete("ToDo", {"description": ["like", f"{prefix}%"]})
		for queue in queues:
			frappe.db.delete("EDA Message", {"queue": queue})
			frappe.db.delete("EDA Error", {"queue": queue})
		frappe.db.commit()
		with BrokerConnection(settings.broker) as connection:
			channel = connection.channel()
			for queue in queues:
				for name in (queue, f"{queue}.dead"):
					channel.queue_delete(name)
			channel.exchange_delete(exchange)
	print(
		f"round: bare {result['bare_per_s']:.0f}/s, insert handler {result['insert_handler_per_s']:.0f}/s "
		f"({result['insert_ratio']:.2f}x), no-op {result['noop_per_s']:.0f}/s"
	)
	return result


def _drain_with_worker(queue: str, count: int, env: dict[str, str]) -> None:
	worker = subprocess.Popen(
		eda_command("worker", "--no-relay", "--queue", queue),
		cwd=frappe.local.sites_path,
		env=env,
		stdout=subprocess.DEVNULL,
		stderr=subprocess.DEVNULL,
	)
	try:
		deadline = time.monotonic() + TIMEOUT
		while _processed(queue) < count:
			if time.monotonic() > deadline or worker.poll() is not None:
				raise RuntimeError(f"the worker processed {_processed(queue)} of {count} from {queue}")
			time.sleep(0.2)
	finally:
		worker.terminate()
		worker.wait(timeout=60)


def _registry(prefix: str, exchange: str) -> HandlerRegistry:
	"""The benchmark's two subscriptions, as the worker will declare them (for the topology)."""
	registry = HandlerRegistry()
	for kind in ("insert", "noop"):
		registry.subscribe(f"{kind}.#", queue=f"{prefix}.{kind}", exchange=exchange)(lambda message: None)
	return registry


def _processed(queue: str) -> int:
	frappe.db.rollback()  # a fresh snapshot: the worker commits on its own connection
	return frappe.db.count("EDA Message", {"queue": queue, "status": "Processed"})


def _rate(queue: str, count: int) -> float:
	first, last = frappe.db.sql(
		"select min(updated_at), max(updated_at) from `tabEDA Message` where queue=%s and status='Processed'",
		queue,
	)[0]
	return (count - 1) / max((last - first).total_seconds(), 1e-6)
