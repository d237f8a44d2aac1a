"""The worker's periodic duties on the real broker: a throughput line while busy, a heartbeat always."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import subprocess
import sys
import time
from datetime import timezone

import pytest

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.consumer import Worker, WorkerOptions
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import PermanentFailure
from frappe_eda.messaging.heartbeat import WorkerBeat
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.store import MessageStore

CONSUMER_LOG = "frappe_eda.messaging.consumer"


def _worker(connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, **kwargs) -> Worker:
	return Worker(connection, registry, store, options=WorkerOptions(poll_seconds=0.1), **kwargs)


def _throughput_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
	return [
		r.getMessage()
		for r in caplog.records
		if r.name == CONSUMER_LOG and r.levelno == logging.INFO and r.getMessage().startswith("last ")
	]


def test_throughput_line_comes_once_after_a_busy_interval_and_never_while_idle(
	connection: BrokerConnection,
	registry: HandlerRegistry,
	store: MessageStore,
	unique_name: str,
	caplog: pytest.LogCaptureFixture,
) -> None:
	exchange, orders, invoices = f"{unique_name}.ex", f"{unique_name}.orders", f"{unique_name}.invoices"
	registry.subscribe("order.*", queue=orders, exchange=exchange)(lambda m: None)

	def refuse(_message: object) -> None:
		raise PermanentFailure("no invoices today")

	registry.subscribe("invoice.*", queue=invoices, exchange=exchange)(refuse)
	worker = _worker(connection, registry, store, report_every=0.5)
	worker.declare()
	publisher = Publisher(connection, exchange=exchange)
	for n in range(4):
		publisher.publish("order.created", {"n": n})
	publisher.publish("invoice.created", {})
	caplog.set_level(logging.INFO, logger=CONSUMER_LOG)

	# All five are handled at once; then the worker idles through three more intervals.
	stats = worker.run(idle_timeout=1.8)

	assert (stats.processed, stats.dead) == (4, 1)
	lines = _throughput_lines(caplog)
	assert len(lines) == 1, lines
	assert "5 handled (4 processed, 0 duplicates, 0 retried, 1 dead)" in lines[0]
	assert lines[0].endswith(f"/s; queues: {orders} 4, {invoices} 1"), lines[0]


def test_a_busy_worker_reports_between_batches_at_most_once_per_interval(
	connection: BrokerConnection,
	registry: HandlerRegistry,
	store: MessageStore,
	unique_name: str,
	caplog: pytest.LogCaptureFixture,
) -> None:
	"""Every delivery is prefetched at once, so the loop never waits on the broker while it works: the
	lines must come between batches."""
	registry.subscribe("order.*", queue=f"{unique_name}.q", exchange=f"{unique_name}.ex")(
		lambda m: time.sleep(0.1)
	)
	worker = Worker(
		connection,
		registry,
		store,
		options=WorkerOptions(poll_seconds=0.1, max_batch=1),
		report_every=0.5,
	)
	worker.declare()
	Publisher(connection, exchange=f"{unique_name}.ex").publish_many(
		[Message("order.created", {"n": n}) for n in range(16)]
	)
	caplog.set_level(logging.INFO, logger=CONSUMER_LOG)

	stats = worker.run(until=lambda s: s.handled >= 16, idle_timeout=10)

	assert stats.processed == 16
	records = [r for r in caplog.records if r.name == CONSUMER_LOG and r.getMessage().startswith("last ")]
	assert len(records) >= 2, [r.getMessage() for r in records]
	gaps = [b.created - a.created for a, b in itertools.pairwise(records)]
	assert all(gap >= 0.45 for gap in gaps), gaps
	assert all(" processed, 0 duplicates, 0 retried, 0 dead), " in r.getMessage() for r in records)


def test_throughput_line_can_be_turned_off(
	connection: BrokerConnection,
	registry: HandlerRegistry,
	store: MessageStore,
	unique_name: str,
	caplog: pytest.LogCaptureFixture,
) -> None:
	registry.subscribe("order.*", queue=f"{unique_name}.q", exchange=f"{unique_name}.ex")(lambda m: None)
	worker = _worker(connection, registry, store, report_every=None)
	worker.declare()
	Publisher(connection, exchange=f"{unique_name}.ex").publish("order.created", {})
	caplog.set_level(logging.INFO, logger=CONSUMER_LOG)

	stats = worker.run(idle_timeout=0.8)

	assert stats.processed == 1 and _throughput_lines(caplog) == []


def test_heartbeat_at_start_while_idle_and_at_stop_with_the_counts(
	connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, unique_name: str
) -> None:
	queue = f"{unique_name}.orders"
	registry.subscribe("order.*", queue=queue, exchange=f"{unique_name}.ex")(lambda m: None)
	beats: list[WorkerBeat] = []
	worker = _worker(connection, registry, store, on_heartbeat=beats.append, heartbeat_every=0.2)
	worker.declare()
	publisher = Publisher(connection, exchange=f"{unique_name}.ex")
	publisher.publish("order.created", {"n": 1})
	publisher.publish("order.created", {"n": 2})

	stats = worker.run(idle_timeout=1.2)

	assert stats.processed == 2
	first, last = beats[0], beats[-1]
	assert (first.handled, first.stopped) == (0, False)  # at start, before any delivery
	assert (last.processed, last.handled, last.stopped) == (2, 2, True)
	idle = [b for b in beats[1:-1] if b.processed == 2]
	assert len(idle) >= 3, f"beats while idle: {len(idle)}"
	assert not any(b.stopped for b in beats[:-1])
	assert {b.worker_id for b in beats} == {first.worker_id}
	assert first.worker_id.startswith(f"{socket.gethostname()}:{os.getpid()}:")
	assert (first.host, first.pid, first.queues) == (socket.gethostname(), os.getpid(), (queue,))
	assert first.started_at.tzinfo is timezone.utc and last.started_at == first.started_at
	seen = [b.last_seen for b in beats]
	assert seen == sorted(seen) and seen[0] >= first.started_at

	worker.run(idle_timeout=0.3)
	assert beats[-1].worker_id != first.worker_id, "each run is a worker of its own"


def test_a_failing_heartbeat_callback_never_stops_the_worker(
	connection: BrokerConnection,
	registry: HandlerRegistry,
	store: MessageStore,
	unique_name: str,
	caplog: pytest.LogCaptureFixture,
) -> None:
	registry.subscribe("order.*", queue=f"{unique_name}.q", exchange=f"{unique_name}.ex")(lambda m: None)
	calls: list[WorkerBeat] = []

	def broken(beat: WorkerBeat) -> None:
		calls.append(beat)
		raise RuntimeError("heartbeat database away")

	worker = _worker(connection, registry, store, on_heartbeat=broken, heartbeat_every=0.1)
	worker.declare()
	Publisher(connection, exchange=f"{unique_name}.ex").publish("order.created", {})
	caplog.set_level(logging.INFO, logger=CONSUMER_LOG)

	stats = worker.run(idle_timeout=0.8)

	assert stats.processed == 1
	assert len(calls) >= 4 and calls[-1].stopped
	failures = [
		r for r in caplog.records if r.name == CONSUMER_LOG and "heartbeat callback failed" in r.getMessage()
	]
	assert len(failures) == len(calls)
	assert failures[0].exc_info is not None, "the first failure with its traceback"
	assert all(r.exc_info is None and "heartbeat database away" in r.getMessage() for r in failures[1:])


def test_the_worker_log_shows_where_no_logging_was_set_up() -> None:
	"""``bench`` sets up no logging: without a handler the INFO throughput line would be dropped."""
	script = (
		"import logging\n"
		"from frappe_eda.messaging.heartbeat import show_worker_log\n"
		"show_worker_log()\n"
		"logging.getLogger('frappe_eda.messaging.consumer').info('last 60s: 3 handled')\n"
		"logging.getLogger('frappe_eda.messaging.consumer').debug('not this')\n"
	)
	result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
	assert result.returncode == 0, result.stderr
	assert "INFO frappe_eda.messaging.consumer: last 60s: 3 handled" in result.stderr
	assert "not this" not in result.stderr

	configured = "import logging\nlogging.getLogger('frappe_eda').setLevel(logging.WARNING)\n" + script
	result = subprocess.run([sys.executable, "-c", configured], capture_output=True, text=True, timeout=60)
	assert result.returncode == 0 and "last 60s" not in result.stderr, "a level chosen is kept"
