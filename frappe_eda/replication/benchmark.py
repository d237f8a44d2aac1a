"""Replication measured against a bare loop on one site:
``bench --site SITE execute frappe_eda.replication.benchmark.run --kwargs '{"count": 500, "rounds": 3}'``.

1. A bare loop inserts ``count`` documents (``EDA Test Item`` with two price rows), one commit each.
2. ``count`` replicated-document messages of the same documents, as a source site's outbox would send
   them (``document_payload``, type ``eda_test_item.on_update``, the source's ``modified``), are published
   with the real ``Publisher`` straight to the queue of an EDA Subscription created for the run; then a
   real ``bench eda worker`` is started and applies them. The rate is taken between the first and the
   last EDA Replica written (``applied_at``), so the worker's start-up is left out; the wall time from
   the worker's start is printed too.
3. The two rates and their ratio (the issue's target: at least 0.7).

With ``"profile": 1`` a ``py-spy record --format raw`` is attached to the worker when ``py-spy`` is on the
PATH (or given as ``"py_spy": "/path/to/py-spy"``); the path of its collapsed stacks is printed.
The DocTypes come from
``frappe_eda.tests.two_sites`` (created if absent and dropped again if this run created them); it commits,
and deletes what it created.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Any

import frappe

from frappe_eda.consumer import eda_command, stop_process
from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.replication import addressing
from frappe_eda.messaging.topology import TopologyDeclarer, topology_for
from frappe_eda.outbox.payload import document_payload
from frappe_eda.replication import subscriptions
from frappe_eda.settings import load_settings

SOURCE = "eda-bench.source"
TIMEOUT = 600


def run(count: int = 500, rounds: int = 3, profile: int = 0, py_spy: str | None = None) -> dict:
	"""``rounds`` rounds of (bare loop, then replication); the median ratio is the figure (the machine
	is noisy: each round measures both sides within seconds of each other)."""
	import statistics

	results = [_one_round(count, profile, py_spy) for _ in range(max(1, int(rounds)))]
	summary = {
		"rounds": len(results),
		"ratios": [round(r["ratio"], 3) for r in results],
		"median_bare_per_s": statistics.median(r["bare_per_s"] for r in results),
		"median_replication_per_s": statistics.median(r["replication_per_s"] for r in results),
		"median_ratio": statistics.median(r["ratio"] for r in results),
	}
	print(f"median of {len(results)} rounds: ratio {summary['median_ratio']:.3f} {summary['ratios']}")
	return summary


def _one_round(count: int = 500, profile: int = 0, py_spy: str | None = None) -> dict:
	from frappe_eda.tests.two_sites import ITEM, drop_doctypes, ensure_doctypes

	count = int(count)
	tag = frappe.generate_hash(length=6).lower()
	name = f"EDA Bench {tag}"
	created = ensure_doctypes()
	settings = load_settings()
	results: dict = {"count": count}
	topology = None
	try:
		# 1. the bare loop
		started = time.perf_counter()
		for n in range(count):
			frappe.get_doc(_item(ITEM, f"bare-{tag}-{n:05d}", n)).insert()
			frappe.db.commit()
		results["bare_seconds"] = time.perf_counter() - started
		results["bare_per_s"] = count / results["bare_seconds"]

		# 2. the same documents through a subscription
		frappe.get_doc(
			{
				"doctype": "EDA Subscription",
				"subscription_name": name,
				"source_doctype": ITEM,
				"source": SOURCE,
				"routing_key_patterns": f"edabench{tag}.#",
			}
		).insert()
		frappe.db.commit()
		spec = subscriptions.spec_of(frappe.get_doc("EDA Subscription", name), settings.exchange)
		registry = HandlerRegistry()
		subscriptions.add_to_registry(registry, [spec])
		topology = topology_for(list(registry), settings.retry, settings.queue_type)
		messages = [_message(ITEM, f"repl-{tag}-{n:05d}", n) for n in range(count)]
		with BrokerConnection(settings.broker) as connection:
			TopologyDeclarer(connection).declare(topology)
			Publisher(connection, exchange=spec.exchange, source=SOURCE).publish_many(
				messages, routing_key=f"edabench{tag}.eda_test_item.on_update"
			).raise_first()
		worker_started = time.perf_counter()
		worker, flame = _worker(tag, profile, py_spy)
		try:
			deadline = time.monotonic() + TIMEOUT
			while _applied(name) < count:
				if time.monotonic() > deadline or worker.poll() is not None:
					raise RuntimeError(
						f"{_applied(name)} of {count} applied; the worker log is in {_log(tag)}"
					)
				time.sleep(0.2)
			results["worker_wall_seconds"] = time.perf_counter() - worker_started
		finally:
			if flame:
				results["profile"] = _stop_profile(flame)
			worker.terminate()
			worker.wait(timeout=60)
		first, last = frappe.db.sql(
			"select min(applied_at), max(applied_at) from `tabEDA Replica` where subscription=%s", name
		)[0]
		results["replication_seconds"] = (last - first).total_seconds()
		results["replication_per_s"] = (count - 1) / max(results["replication_seconds"], 1e-6)
		results["ratio"] = results["replication_per_s"] / results["bare_per_s"]
		wrong = frappe.db.count("EDA Replica", {"subscription": name, "status": ["!=", "Applied"]})
		results["not_applied"] = wrong
	finally:
		frappe.db.rollback()
		frappe.db.delete("EDA Test Item Price", {"parent": ["like", f"%-{tag}-%"]})
		frappe.db.delete(ITEM, {"name": ["like", f"%-{tag}-%"]})
		frappe.db.delete("EDA Replica", {"subscription": name})
		frappe.db.delete("EDA Message", {"queue": subscriptions.default_queue(name)})
		frappe.db.delete("EDA Error", {"queue": subscriptions.default_queue(name)})
		if frappe.db.exists("EDA Subscription", name):
			frappe.delete_doc("EDA Subscription", name, force=True)
		frappe.db.commit()
		if topology is not None:
			with BrokerConnection(settings.broker) as connection:  # its queues; the exchange is shared
				channel = connection.channel()
				for queue in topology.queues:
					channel.queue_delete(queue.name)
		if created:
			drop_doctypes()
	for key, value in results.items():
		print(f"{key:<24}{value:>14.3f}" if isinstance(value, float) else f"{key:<24}{value!s:>14}")
	return results


def _item(doctype: str, code: str, n: int) -> dict:
	return {
		"doctype": doctype,
		"item_code": code,
		"item_name": f"Benchmark item {n}",
		"warehouse": "WH1",
		"prices": [{"price_list": "Retail", "rate": n + 0.5}, {"price_list": "Trade", "rate": n}],
	}


def _message(doctype: str, code: str, n: int) -> Message:
	"""The message a source's outbox would send for the document's insert."""
	doc = frappe.get_doc(_item(doctype, code, n))
	now = frappe.utils.now_datetime()
	doc.name, doc.owner, doc.creation, doc.modified, doc.modified_by = (
		code,
		"Administrator",
		now,
		now,
		"Administrator",
	)
	for idx, row in enumerate(doc.prices, 1):
		row.name, row.parent, row.parenttype, row.parentfield, row.idx = (
			f"{code}-{idx}",
			code,
			doctype,
			"prices",
			idx,
		)
	return Message(
		type="eda_test_item.on_update",
		payload=document_payload(doc),
		source=SOURCE,
		headers={addressing.ORIGIN: SOURCE},
	)


def _applied(name: str) -> int:
	frappe.db.rollback()  # a fresh snapshot: the worker commits on its own connection
	return frappe.db.count("EDA Replica", {"subscription": name})


def _log(tag: str) -> str:
	return frappe.get_site_path("logs", f"eda-replication-bench-{tag}.log")


def _worker(tag: str, profile: int, py_spy: str | None) -> tuple[subprocess.Popen, Any]:
	"""The worker, and when profiling a ``py-spy record`` attached to it (``(process, path)``)."""
	log = open(_log(tag), "wb")
	worker = subprocess.Popen(
		eda_command("worker", "--no-relay"),
		cwd=frappe.local.sites_path,
		env=dict(os.environ),
		stdout=log,
		stderr=subprocess.STDOUT,
	)
	spy = py_spy or shutil.which("py-spy")
	if not (profile and spy):
		return worker, None
	out = os.path.abspath(frappe.get_site_path("logs", f"eda-replication-bench-{tag}.txt"))
	command = [spy, "record", "--threads", "--nonblocking", "--rate", "200", "--format", "raw"]
	command.extend(["-o", out, "--pid", str(worker.pid)])
	recorder = subprocess.Popen(
		command,
		stdout=log,
		stderr=subprocess.STDOUT,
	)
	return worker, (recorder, out)


def _stop_profile(flame: Any) -> str:
	"""Stop ``py-spy`` (SIGINT makes it write its file); the path of the collapsed stacks."""
	recorder, out = flame
	stop_process(recorder, signal.SIGINT)
	return out
