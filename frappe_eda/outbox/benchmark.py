"""The outbox inside a real site, measured: ``bench --site SITE execute frappe_eda.outbox.benchmark.run``.

Prints the time an EDA Event Rule adds to a document save (median, against the same save with no
rule), the relay's throughput from the outbox table, and commit-to-handler latency through a real
``bench eda worker`` process. It commits, and deletes what it created.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import frappe

import frappe_eda
from frappe_eda.consumer import spawn_worker
from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.topology import TopologyDeclarer
from frappe_eda.outbox.relay import drain
from frappe_eda.outbox.rules import clear_rules_cache
from frappe_eda.settings import load_settings


def run(count: int = 300) -> dict:
	count = int(count)
	prefix = f"eda-bench-{frappe.generate_hash(length=6)}"
	exchange, queue = f"{prefix}.events", f"{prefix}.latency"
	results: dict = {}
	was_enabled = frappe.db.get_single_value("EDA Settings", "enabled")
	frappe.db.set_single_value("EDA Settings", "enabled", 1)
	frappe.db.commit()
	try:
		without, with_rule = _save_timings(count, prefix, exchange)
		results["save_without_rule_ms"] = statistics.median(without)
		results["save_with_rule_ms"] = statistics.median(with_rule)
		results["added_per_save_ms"] = results["save_with_rule_ms"] - results["save_without_rule_ms"]
		with BrokerConnection(load_settings().broker) as connection:
			channel = connection.channel()
			channel.exchange_declare(exchange, "topic", durable=True)
			channel.queue_declare(f"{prefix}.sink", durable=True)
			channel.queue_bind(f"{prefix}.sink", exchange, "#")
			started = time.perf_counter()
			sent = drain(connection)
			results["relay_messages_per_s"] = sent / (time.perf_counter() - started)
			channel.queue_delete(f"{prefix}.sink")
		results.update(_commit_to_handler(exchange, queue, min(count, 200)))
	finally:
		frappe.db.rollback()
		frappe.db.delete("ToDo", {"description": ["like", f"{prefix}%"]})
		frappe.db.delete("EDA Message", {"exchange": exchange})
		frappe.db.delete("EDA Message", {"queue": queue})
		frappe.db.delete("EDA Event Rule", {"exchange": exchange})
		frappe.db.set_single_value("EDA Settings", "enabled", was_enabled or 0)
		frappe.db.commit()
		clear_rules_cache()
	for key, value in results.items():
		print(f"{key:<28}{value:>12.2f}")
	return results


def _save_timings(count: int, prefix: str, exchange: str, blocks: int = 10) -> tuple[list, list]:
	"""ToDo saves in alternating blocks without and with an EDA Event Rule, so the machine's drift over
	the minute weighs on both sides alike (one long run of each differed by up to 1 ms between runs)."""
	without: list[float] = []
	with_rule: list[float] = []
	per_block = max(1, count // blocks)
	for block in range(blocks):
		without += _save_ms(per_block, f"{prefix} {block}a")
		rule = frappe.get_doc(
			{
				"doctype": "EDA Event Rule",
				"document_type": "ToDo",
				"event": "after_insert",
				"exchange": exchange,
			}
		).insert()
		frappe.db.commit()
		clear_rules_cache()
		with_rule += _save_ms(per_block, f"{prefix} {block}b")
		frappe.delete_doc("EDA Event Rule", rule.name)
		frappe.db.commit()
		clear_rules_cache()
	return without, with_rule


def _save_ms(count: int, label: str) -> list[float]:
	timings = []
	for n in range(count):
		started = time.perf_counter()
		frappe.get_doc({"doctype": "ToDo", "description": f"{label} {n}"}).insert()
		frappe.db.commit()
		timings.append((time.perf_counter() - started) * 1000)
	return timings


def _commit_to_handler(exchange: str, queue: str, count: int) -> dict:
	out = tempfile.NamedTemporaryFile(prefix="eda-latency-", suffix=".txt", delete=False).name
	env = {
		"EDA_HANDLER_MODULES": "frappe_eda.tests.latency_handlers",
		"EDA_BENCH_QUEUE": queue,
		"EDA_BENCH_EXCHANGE": exchange,
		"EDA_BENCH_OUT": out,
	}
	worker = spawn_worker(env)
	try:
		_wait_for_consumer(queue)
		for n in range(count):
			frappe_eda.publish("bench.latency", {"n": n, "committed_at": time.time()}, exchange=exchange)
			frappe.db.commit()
			time.sleep(0.02)
		deadline = time.monotonic() + 60
		while time.monotonic() < deadline and _lines(out) < count:
			time.sleep(0.1)
	finally:
		worker.terminate()
		worker.wait(timeout=60)
	values = sorted(float(v) * 1000 for v in open(out).read().split())
	os.unlink(out)
	with BrokerConnection(load_settings().broker) as connection:
		channel = connection.channel()
		for name in (
			queue,
			f"{queue}.dead",
			*(f"{queue}.retry.{t}" for t in ("1s", "5s", "30s", "2m", "10m")),
		):
			channel.queue_delete(name)
		channel.exchange_delete(exchange)
	return {
		"commit_to_handler_p50_ms": statistics.median(values),
		"commit_to_handler_p99_ms": values[max(0, int(len(values) * 0.99) - 1)],
		"commit_to_handler_n": float(len(values)),
	}


def _lines(path: str) -> int:
	try:
		with open(path) as f:
			return sum(1 for _ in f)
	except FileNotFoundError:
		return 0


def _wait_for_consumer(queue: str) -> None:
	"""A consumer means the worker's bindings exist too (it binds before it consumes)."""
	deadline = time.monotonic() + 60
	with BrokerConnection(load_settings().broker) as connection:
		declarer = TopologyDeclarer(connection)
		while not declarer.consumer_count(queue):
			if time.monotonic() > deadline:
				raise TimeoutError(f"no worker consumed {queue} within 60 s")
			connection.sleep(0.3)
		declarer.close()
