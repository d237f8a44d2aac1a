from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.consumer import Worker, WorkerOptions
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import ReplayRefused
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.replay import Replayer
from frappe_eda.messaging.store import Direction, MessageFilter, MessageStore, Status
from frappe_eda.messaging.topology import TopologyDeclarer

REPO = Path(__file__).resolve().parents[2]


def _start_worker(amqp_url: str, store_url: str, queue: str, exchange: str) -> subprocess.Popen[bytes]:
	env = {
		**os.environ,
		"PYTHONPATH": str(REPO),
		"EDA_AMQP_URL": amqp_url,
		"EDA_STORE_URL": store_url,
		"EDA_TEST_QUEUE": queue,
		"EDA_TEST_EXCHANGE": exchange,
		"EDA_TEST_HANDLER_SECONDS": "0.02",
	}
	command = [
		sys.executable,
		"-m",
		"frappe_eda.cli",
		"worker",
		"-m",
		"tests.fixtures.side_effect_handlers",
		"--prefetch",
		"20",
	]
	return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(condition, timeout: float, what: str) -> None:
	deadline = time.monotonic() + timeout
	while time.monotonic() < deadline:
		if condition():
			return
		time.sleep(0.05)
	pytest.fail(f"timed out after {timeout}s waiting for {what}")


def test_sigterm_finishes_the_message_in_hand_and_loses_nothing(
	connection: BrokerConnection, store: MessageStore, store_url: str, amqp_url: str, unique_name: str
) -> None:
	queue, exchange = f"{unique_name}.effects", f"{unique_name}.ex"
	engine = create_engine(store_url)
	with engine.begin() as db:
		db.execute(text("CREATE TABLE side_effect (message_id VARCHAR(64) NOT NULL)"))

	def effects() -> list[str]:
		with engine.connect() as db:
			return [row[0] for row in db.execute(text("SELECT message_id FROM side_effect"))]

	declarer = TopologyDeclarer(connection)
	worker = _start_worker(amqp_url, store_url, queue, exchange)
	try:
		_wait_for(
			lambda: (declarer.consumer_count(queue) or 0) > 0,
			30,
			"the worker to declare its queue",
		)
		messages = [Message("work.item", {"n": n}) for n in range(400)]
		# No store on this side: SQLite has one writer, and the worker holds it batch after batch.
		Publisher(connection, exchange=exchange).publish_many(messages)
		_wait_for(lambda: len(effects()) >= 50, 60, "the first 50 side effects")
		worker.send_signal(signal.SIGTERM)
		assert worker.wait(timeout=30) == 0, worker.stdout.read().decode() if worker.stdout else ""
		stopped_at = len(effects())
		output = worker.stdout.read().decode() if worker.stdout else ""
		assert stopped_at < len(messages), f"the worker should have stopped mid-stream:\n{output}"

		worker = _start_worker(amqp_url, store_url, queue, exchange)
		_wait_for(lambda: len(effects()) >= len(messages), 90, "every side effect")
		worker.send_signal(signal.SIGTERM)
		assert worker.wait(timeout=30) == 0
	finally:
		if worker.poll() is None:
			worker.kill()

	rows = effects()
	assert sorted(rows) == sorted(m.id for m in messages), "each message's effect exactly once"
	processed = store.find(
		MessageFilter(direction=Direction.INCOMING, statuses=(Status.PROCESSED,), limit=10_000)
	)
	assert len(processed) == len(messages)
	assert declarer.queue_depth(queue) == 0
	declarer.delete(_topology(queue, exchange))


def _topology(queue: str, exchange: str):
	from frappe_eda.messaging.registry import Subscription
	from frappe_eda.messaging.retry import RetryPolicy
	from frappe_eda.messaging.topology import consumer_topology

	subscription = Subscription(
		queue, ("work.#",), exchange, lambda m: None, "x", retry=RetryPolicy(3, (0.2,))
	)
	return consumer_topology(subscription, RetryPolicy())


def test_dead_message_replayed_after_the_handler_is_fixed_is_processed(
	connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, unique_name: str
) -> None:
	queue = f"{unique_name}.stock"
	known = {"CHAIR"}
	reserved: list[str] = []

	def reserve(message: Message) -> None:
		if message.payload["item"] not in known:
			raise LookupError(f"unknown item {message.payload['item']}")
		reserved.append(message.payload["item"])

	registry.subscribe(
		"order.*", queue=queue, exchange=f"{unique_name}.ex", max_attempts=2, retry_delays=(0.1,)
	)(reserve)
	worker = Worker(connection, registry, store, options=WorkerOptions(poll_seconds=0.1))
	worker.declare()
	publisher = Publisher(connection, store, exchange=f"{unique_name}.ex")
	sent = publisher.publish("order.created", {"item": "WIDGET"})
	worker.run(until=lambda s: s.dead >= 1, idle_timeout=10)
	assert store.get(sent.id, Direction.INCOMING, queue).status is Status.DEAD

	known.add("WIDGET")
	replayer = Replayer(publisher, store, actor="ops@example.com")
	result = replayer.replay(sent.id, queue)
	worker.run(until=lambda s: s.processed >= 1, idle_timeout=10)

	assert result.sent and reserved == ["WIDGET"]
	record = store.get(sent.id, Direction.INCOMING, queue)
	assert record.status is Status.PROCESSED and record.replay_count == 1
	assert record.headers["x-eda-replayed-by"] == "ops@example.com"
	with pytest.raises(ReplayRefused, match="already processed"):
		replayer.replay(sent.id, queue)
	assert replayer.replay(sent.id, queue, dry_run=True, force=True).sent is False


def test_forced_replay_of_a_processed_message_runs_the_handler_again(
	connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, unique_name: str
) -> None:
	queue = f"{unique_name}.again"
	calls: list[str] = []
	registry.subscribe("order.*", queue=queue, exchange=f"{unique_name}.ex")(lambda m: calls.append(m.id))
	worker = Worker(connection, registry, store, options=WorkerOptions(poll_seconds=0.1))
	worker.declare()
	publisher = Publisher(connection, store, exchange=f"{unique_name}.ex")
	sent = publisher.publish("order.created", {})
	worker.run(until=lambda s: s.processed >= 1, idle_timeout=10)

	Replayer(publisher, store).replay(sent.id, queue, force=True)
	worker.run(until=lambda s: s.processed >= 2, idle_timeout=10)

	assert calls == [sent.id, sent.id]


def test_replay_by_filter_sends_only_matching_dead_messages(
	connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, unique_name: str
) -> None:
	queue = f"{unique_name}.bulk"
	broken = {"on": True}
	done: list[int] = []

	def handler(message: Message) -> None:
		if broken["on"] and message.payload["n"] % 2:
			raise RuntimeError("odd numbers are broken")
		done.append(message.payload["n"])

	registry.subscribe("order.#", queue=queue, exchange=f"{unique_name}.ex", max_attempts=1)(handler)
	worker = Worker(connection, registry, store, options=WorkerOptions(poll_seconds=0.1))
	worker.declare()
	publisher = Publisher(connection, store, exchange=f"{unique_name}.ex")
	publisher.publish_many([Message("order.created", {"n": n}) for n in range(6)])
	worker.run(until=lambda s: s.handled >= 6, idle_timeout=10)
	broken["on"] = False

	query = MessageFilter(
		direction=Direction.INCOMING, statuses=(Status.DEAD,), queue=queue, routing_key="order.*"
	)
	dry = Replayer(publisher, store).replay_matching(query, dry_run=True)
	results = Replayer(publisher, store).replay_matching(query)
	worker.run(until=lambda s: s.processed >= 6, idle_timeout=10)

	assert len(dry) == 3 and not any(r.sent for r in dry)
	assert [r.sent for r in results] == [True, True, True]
	assert sorted(done) == [0, 1, 2, 3, 4, 5]
