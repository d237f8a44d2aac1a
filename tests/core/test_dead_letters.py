"""Replays and resolves keep ``<queue>.dead`` and the store consistent, on the real broker.

The store is the record; ``.dead`` holds the parked copies of what is still dead. A replay removes the
message's copy (and only it: every other copy stays, byte for byte), the worker resolves a message and
its errors when a replay or a retry of it is processed, and cleanings of one dead queue exclude each
other across processes without losing a copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.consumer import Worker, WorkerOptions
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.replay import Replayer
from frappe_eda.messaging.store import Direction, MessageFilter, MessageStore, Status
from frappe_eda.messaging.topology import Binding, Exchange, Queue, Topology, TopologyDeclarer

REPO = Path(__file__).resolve().parents[2]


def _worker(connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore) -> Worker:
	worker = Worker(connection, registry, store, options=WorkerOptions(poll_seconds=0.1))
	worker.declare()
	return worker


def _depth(connection: BrokerConnection, queue: str) -> int | None:
	declarer = TopologyDeclarer(connection)
	try:
		return declarer.queue_depth(queue)
	finally:
		declarer.close()


def _all_resolved(store: MessageStore, message_id: str, queue: str) -> tuple[bool, list[bool]]:
	record = store.get(message_id, Direction.INCOMING, queue)
	assert record is not None
	return record.resolved, [e.resolved for e in store.errors(message_id, queue)]


def _failing_until_fixed(registry: HandlerRegistry, queue: str, exchange: str, **options: Any) -> dict:
	state = {"broken": True, "done": []}

	def handler(message: Message) -> None:
		if state["broken"]:
			raise RuntimeError("the warehouse is closed")
		state["done"].append(message.id)

	registry.subscribe("order.*", queue=queue, exchange=exchange, **options)(handler)
	return state


# --- replay ---------------------------------------------------------------------------------------


def test_a_replayed_message_leaves_the_dead_queue_and_is_resolved_once_processed(
	connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, unique_name: str
) -> None:
	queue, exchange = f"{unique_name}.stock", f"{unique_name}.ex"
	state = _failing_until_fixed(registry, queue, exchange, max_attempts=2, retry_delays=(0.1,))
	worker = _worker(connection, registry, store)
	publisher = Publisher(connection, store, exchange=exchange)
	sent = publisher.publish("order.created", {"item": "WIDGET"})
	kept = publisher.publish("order.created", {"item": "CHAIR"})
	worker.run(until=lambda s: s.dead >= 2, idle_timeout=10)
	assert _depth(connection, f"{queue}.dead") == 2
	assert _all_resolved(store, sent.id, queue) == (False, [False, False])

	state["broken"] = False
	result = Replayer(publisher, store).replay(sent.id, queue)

	assert result.sent
	assert _depth(connection, f"{queue}.dead") == 1, "the replayed message's copy is gone, the other stays"
	assert result.dead_copy_removed
	worker.run(until=lambda s: s.processed >= 1, idle_timeout=10)
	assert state["done"] == [sent.id]
	record = store.get(sent.id, Direction.INCOMING, queue)
	assert record is not None and record.status is Status.PROCESSED
	assert _all_resolved(store, sent.id, queue) == (True, [True, True])
	assert _all_resolved(store, kept.id, queue) == (False, [False, False])
	assert store.find(MessageFilter(statuses=(Status.DEAD,))) != [], "the other one is still dead"


def test_a_replay_that_dies_again_is_parked_again(
	connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, unique_name: str
) -> None:
	queue, exchange = f"{unique_name}.again", f"{unique_name}.ex"
	_failing_until_fixed(registry, queue, exchange, max_attempts=1)
	worker = _worker(connection, registry, store)
	publisher = Publisher(connection, store, exchange=exchange)
	sent = publisher.publish("order.created", {})
	worker.run(until=lambda s: s.dead >= 1, idle_timeout=10)
	replayer = Replayer(publisher, store)

	first = replayer.replay(sent.id, queue)
	worker.run(until=lambda s: s.dead >= 2, idle_timeout=10)
	assert _depth(connection, f"{queue}.dead") == 1, "dead again: its new copy is parked"
	record = store.get(sent.id, Direction.INCOMING, queue)
	assert record is not None and record.status is Status.DEAD and not record.resolved

	second = replayer.replay(sent.id, queue)
	assert (first.dead_copy_removed, second.dead_copy_removed) == (True, True)
	assert _depth(connection, f"{queue}.dead") == 0


def test_replay_matching_cleans_each_dead_queue_once(
	connection: BrokerConnection,
	registry: HandlerRegistry,
	store: MessageStore,
	unique_name: str,
	monkeypatch: pytest.MonkeyPatch,
) -> None:
	from frappe_eda.messaging import replay as replay_module

	exchange = f"{unique_name}.ex"
	queues = [f"{unique_name}.a", f"{unique_name}.b"]
	states = [_failing_until_fixed(registry, q, exchange, max_attempts=1) for q in queues]
	worker = _worker(connection, registry, store)
	publisher = Publisher(connection, store, exchange=exchange)
	publisher.publish_many([Message("order.created", {"n": n}) for n in range(5)])
	worker.run(until=lambda s: s.dead >= 10, idle_timeout=10)
	assert [_depth(connection, f"{q}.dead") for q in queues] == [5, 5]
	scans: list[tuple[str, int]] = []
	real = replay_module.remove_dead_copies

	def counting(connection: BrokerConnection, queue: str, message_ids: Any, **options: Any) -> Any:
		message_ids = list(message_ids)
		scans.append((queue, len(message_ids)))
		return real(connection, queue, message_ids, **options)

	monkeypatch.setattr(replay_module, "remove_dead_copies", counting)
	for state in states:
		state["broken"] = False

	results = Replayer(publisher, store).replay_matching(
		MessageFilter(direction=Direction.INCOMING, statuses=(Status.DEAD,))
	)

	assert [_depth(connection, f"{q}.dead") for q in queues] == [0, 0]
	assert len(results) == 10 and all(r.sent and r.dead_copy_removed for r in results)
	assert sorted(scans) == [(queues[0], 5), (queues[1], 5)], "one scan per queue"
	worker.run(until=lambda s: s.processed >= 10, idle_timeout=10)
	for record in store.find(MessageFilter(direction=Direction.INCOMING)):
		assert record.status is Status.PROCESSED and record.resolved
		assert all(e.resolved for e in store.errors(record.message_id, record.queue))


def test_a_cleaning_that_cannot_run_does_not_fail_the_replay(
	connection: BrokerConnection,
	registry: HandlerRegistry,
	store: MessageStore,
	unique_name: str,
	raw_channel: Any,
) -> None:
	queue, exchange = f"{unique_name}.busy", f"{unique_name}.ex"
	_failing_until_fixed(registry, queue, exchange, max_attempts=1)
	worker = _worker(connection, registry, store)
	publisher = Publisher(connection, store, exchange=exchange)
	sent = publisher.publish("order.created", {})
	worker.run(until=lambda s: s.dead >= 1, idle_timeout=10)
	raw_channel.queue_declare(f"{queue}.dead.cleaning", exclusive=True, auto_delete=True)  # someone cleans

	result = Replayer(publisher, store, cleaning_timeout=0.5).replay(sent.id, queue)

	assert result.sent and not result.dead_copy_removed
	assert f"{queue}.dead was not removed" in result.detail and "held its lock" in result.detail
	assert _depth(connection, f"{queue}.dead") == 1
	raw_channel.queue_delete(f"{queue}.dead.cleaning")


def test_a_replayed_message_that_was_not_dead_leaves_the_dead_queue_alone(
	connection: BrokerConnection,
	registry: HandlerRegistry,
	store: MessageStore,
	unique_name: str,
	raw_channel: Any,
) -> None:
	"""Only a Dead message has a parked copy: replaying a Failed one (waiting in a retry tier) must not
	read and rewrite the whole dead queue looking for one. The held lock shows it: a cleaning would wait
	for it and say so in the result."""
	queue, exchange = f"{unique_name}.failed", f"{unique_name}.ex"
	_failing_until_fixed(registry, queue, exchange, max_attempts=5, retry_delays=(60,))
	worker = _worker(connection, registry, store)
	publisher = Publisher(connection, store, exchange=exchange)
	sent = publisher.publish("order.created", {})
	worker.run(until=lambda s: s.retried >= 1, idle_timeout=10)
	record = store.get(sent.id, Direction.INCOMING, queue)
	assert record is not None and record.status is Status.FAILED
	raw_channel.queue_declare(f"{queue}.dead.cleaning", exclusive=True, auto_delete=True)  # someone cleans

	started = time.monotonic()
	result = Replayer(publisher, store, cleaning_timeout=2).replay(sent.id, queue)

	assert result.sent and not result.dead_copy_removed
	assert "not removed" not in result.detail, result.detail
	assert time.monotonic() - started < 2, "it did not wait for the dead queue's lock"
	raw_channel.queue_delete(f"{queue}.dead.cleaning")


def test_edit_and_replay_resolves_the_original_and_removes_its_dead_copy(
	connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, unique_name: str
) -> None:
	queue, exchange = f"{unique_name}.edit", f"{unique_name}.ex"
	_failing_until_fixed(registry, queue, exchange, max_attempts=1)
	worker = _worker(connection, registry, store)
	publisher = Publisher(connection, store, exchange=exchange)
	sent = publisher.publish("order.created", {"qty": -1})
	worker.run(until=lambda s: s.dead >= 1, idle_timeout=10)

	Replayer(publisher, store).edit_and_replay(sent.id, {"qty": 1}, queue)

	assert _all_resolved(store, sent.id, queue) == (True, [True])
	assert _depth(connection, queue) == 1 and _depth(connection, f"{queue}.dead") == 0


def test_a_replayed_outgoing_message_is_resolved_with_its_errors_when_published(
	connection: BrokerConnection, store: MessageStore, unique_name: str
) -> None:
	exchange, queue = f"{unique_name}.ex", f"{unique_name}.late"
	declarer = TopologyDeclarer(connection)
	declarer.declare(Topology((Exchange(exchange),)))
	publisher = Publisher(connection, store, exchange=exchange)
	report = publisher.publish_many([Message("order.created", {})])
	(message_id,) = report.failed
	assert store.errors(message_id, "")[0].resolved is False
	topology = Topology((Exchange(exchange),), (Queue(queue),), (Binding(exchange, queue, "order.*"),))
	declarer.declare(topology)

	result = Replayer(publisher, store).replay(message_id)

	record = store.get(message_id, Direction.OUTGOING)
	assert result.sent and record is not None
	assert (record.status, record.resolved) == (Status.PUBLISHED, True)
	assert [e.resolved for e in store.errors(message_id, "")] == [True]
	declarer.delete(topology)
	declarer.close()


# --- the worker resolves what it processes after a failure ----------------------------------------


def test_a_message_processed_on_a_retry_is_resolved_with_its_errors(
	connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, unique_name: str
) -> None:
	queue, exchange = f"{unique_name}.flaky", f"{unique_name}.ex"
	tries: list[int] = []

	def flaky(message: Message) -> None:
		tries.append(1)
		if len(tries) == 1:
			raise TimeoutError("the ERP did not answer")

	registry.subscribe("order.*", queue=queue, exchange=exchange, max_attempts=3, retry_delays=(0.1,))(flaky)
	worker = _worker(connection, registry, store)
	publisher = Publisher(connection, store, exchange=exchange)
	sent = publisher.publish("order.created", {})
	steady = publisher.publish("order.created", {})
	worker.run(until=lambda s: s.processed >= 2, idle_timeout=10)

	record = store.get(sent.id, Direction.INCOMING, queue)
	assert record is not None and (record.status, record.attempts) == (Status.PROCESSED, 2)
	assert _all_resolved(store, sent.id, queue) == (True, [True])
	assert _all_resolved(store, steady.id, queue) == (False, []), (
		"a first-time success has nothing to resolve"
	)


# --- the cleaning itself --------------------------------------------------------------------------


@pytest.fixture(params=["classic", "quorum"])
def dead_queue(
	connection: BrokerConnection, unique_name: str, request: pytest.FixtureRequest
) -> Iterator[str]:
	"""A work queue ``<name>.work`` dead-lettering into its ``.dead`` (classic or quorum, as the worker
	declares them), both deleted afterwards."""
	queue = f"{unique_name}.work"
	dead_letters = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{queue}.dead"}
	topology = Topology(
		queues=(Queue(queue, request.param, dead_letters), Queue(f"{queue}.dead", request.param))
	)
	declarer = TopologyDeclarer(connection)
	declarer.declare(topology)
	yield queue
	declarer.delete(topology)
	declarer.close()


def _park(channel: Any, queue: str, message_id: str, **headers: Any) -> None:
	channel.basic_publish(
		"",
		f"{queue}.dead",
		json.dumps({"id": message_id, "headers": headers}).encode(),
		pika.BasicProperties(
			message_id=message_id,
			content_type="application/json",
			type="order.created",
			correlation_id=f"c-{message_id}",
			delivery_mode=2,
			headers={"x-eda-error": f"failed {message_id}", "x-eda-attempt": 3, **headers},
		),
	)


def _drain(channel: Any, queue: str) -> list[tuple[bytes, dict[str, Any]]]:
	"""Everything in ``queue``: body and the properties that matter, in order."""
	found = []
	while True:
		method, properties, body = channel.basic_get(queue, auto_ack=True)
		if method is None:
			return found
		found.append(
			(
				body,
				{
					"message_id": properties.message_id,
					"content_type": properties.content_type,
					"type": properties.type,
					"correlation_id": properties.correlation_id,
					"delivery_mode": properties.delivery_mode,
					"headers": properties.headers,
				},
			)
		)


def test_cleaning_removes_the_targets_and_keeps_every_other_copy_as_it_was(
	connection: BrokerConnection, dead_queue: str, raw_channel: Any
) -> None:
	from frappe_eda.messaging.deadletters import remove_dead_copies

	raw_channel.confirm_delivery()
	ids = [f"m{n}" for n in range(8)]
	for message_id in ids:
		_park(raw_channel, dead_queue, message_id)
	# One parked by the broker itself (rejected from the work queue): it carries x-death.
	raw_channel.basic_publish(
		"", dead_queue, b'{"id":"rejected"}', pika.BasicProperties(message_id="rejected", delivery_mode=2)
	)
	method, _properties, _body = raw_channel.basic_get(dead_queue, auto_ack=False)
	raw_channel.basic_nack(method.delivery_tag, requeue=False)
	_park(raw_channel, dead_queue, "m9")
	deadline = time.monotonic() + 10  # the broker dead-letters in the background (a quorum queue)
	while _depth(connection, f"{dead_queue}.dead") != 10 and time.monotonic() < deadline:
		time.sleep(0.05)
	expected = _drain(raw_channel, f"{dead_queue}.dead")
	assert len(expected) == 10
	assert "x-death" in next(p for _b, p in expected if p["message_id"] == "rejected")["headers"]
	for body, props in expected:  # put them back, as they were
		raw_channel.basic_publish(
			"",
			f"{dead_queue}.dead",
			body,
			pika.BasicProperties(**props),
		)

	outcome = remove_dead_copies(connection, dead_queue, ["m2", "m6", "never-dead"])

	assert sorted(outcome.removed) == ["m2", "m6"] and outcome.not_found == ("never-dead",)
	assert outcome.moved == 8, "a target never found means the whole queue is read once"
	left = _drain(raw_channel, f"{dead_queue}.dead")
	kept = [item for item in expected if item[1]["message_id"] not in ("m2", "m6")]
	assert left == kept, "every other copy kept, in order, body and properties intact"
	assert _depth(connection, f"{dead_queue}.dead.cleaning") is None, "the lock is gone"


def test_cleaning_stops_once_every_target_is_removed(
	connection: BrokerConnection, dead_queue: str, raw_channel: Any
) -> None:
	from frappe_eda.messaging.deadletters import remove_dead_copies

	raw_channel.confirm_delivery()
	for n in range(6):
		_park(raw_channel, dead_queue, f"m{n}")

	outcome = remove_dead_copies(connection, dead_queue, ["m1"])

	assert (outcome.removed, outcome.moved, outcome.not_found) == (("m1",), 1, ())
	left = [props["message_id"] for _body, props in _drain(raw_channel, f"{dead_queue}.dead")]
	assert left == ["m2", "m3", "m4", "m5", "m0"], "the head moved to the tail; the rest untouched"


def test_cleaning_after_a_replay_keeps_the_copy_parked_after_it(
	connection: BrokerConnection, dead_queue: str, raw_channel: Any
) -> None:
	from frappe_eda.messaging.deadletters import remove_dead_copies

	raw_channel.confirm_delivery()
	_park(raw_channel, dead_queue, "m")  # dead before any replay
	_park(raw_channel, dead_queue, "m", **{"x-eda-replay-count": 1})  # dead again after replay #1

	outcome = remove_dead_copies(connection, dead_queue, ["m"], replayed={"m": 1})

	assert outcome.removed == ("m",)
	left = _drain(raw_channel, f"{dead_queue}.dead")
	assert [props["headers"].get("x-eda-replay-count") for _body, props in left] == [1]


def test_cleaning_a_missing_dead_queue_is_nothing_to_do(
	connection: BrokerConnection, unique_name: str
) -> None:
	from frappe_eda.messaging.deadletters import remove_dead_copies

	outcome = remove_dead_copies(connection, f"{unique_name}.never", ["m"])
	assert (outcome.removed, outcome.moved, outcome.not_found) == ((), 0, ("m",))
	assert _depth(connection, f"{unique_name}.never.dead.cleaning") is None


def test_a_held_lock_makes_the_cleaning_wait_then_give_up(
	connection: BrokerConnection, dead_queue: str, raw_channel: Any
) -> None:
	from frappe_eda.messaging.deadletters import remove_dead_copies
	from frappe_eda.messaging.errors import DeadLetterQueueBusy

	raw_channel.confirm_delivery()
	_park(raw_channel, dead_queue, "m")
	raw_channel.queue_declare(f"{dead_queue}.dead.cleaning", exclusive=True, auto_delete=True)

	with pytest.raises(DeadLetterQueueBusy, match="held its lock"):
		remove_dead_copies(connection, dead_queue, ["m"], lock_timeout=0.5)
	assert _depth(connection, f"{dead_queue}.dead") == 1

	raw_channel.queue_delete(f"{dead_queue}.dead.cleaning")
	assert remove_dead_copies(connection, dead_queue, ["m"]).removed == ("m",)


CLEANER = textwrap.dedent(
	"""
	import json, logging, sys
	from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
	from frappe_eda.messaging.deadletters import remove_dead_copies

	waits = []
	handler = logging.Handler()
	handler.emit = lambda record: waits.append(record.getMessage())
	logging.getLogger("frappe_eda.messaging.deadletters").addHandler(handler)
	logging.getLogger("frappe_eda.messaging.deadletters").setLevel(logging.INFO)
	url, queue, *ids = sys.argv[1:]
	with BrokerConnection(BrokerSettings(url=url)) as connection:
		sys.stdin.readline()  # start together, connected
		outcome = remove_dead_copies(connection, queue, ids, lock_timeout=60)
	waited = any("being cleaned by another" in w for w in waits)
	print(json.dumps({"removed": outcome.removed, "moved": outcome.moved, "waited": waited}))
	"""
)


def test_two_cleanings_at_once_remove_both_targets_and_lose_nothing(
	connection: BrokerConnection, dead_queue: str, raw_channel: Any, amqp_url: str
) -> None:
	"""One broker connection per process is the rule, so the two cleaners are two processes."""
	raw_channel.confirm_delivery()
	ids = [f"m{n}" for n in range(300)]
	for message_id in ids:
		_park(raw_channel, dead_queue, message_id)
	env = {**os.environ, "PYTHONPATH": str(REPO)}
	cleaners = [
		subprocess.Popen(
			[sys.executable, "-c", CLEANER, amqp_url, dead_queue, target],
			env=env,
			stdin=subprocess.PIPE,
			stdout=subprocess.PIPE,
			stderr=subprocess.PIPE,
			text=True,
		)
		for target in ("m290", "m295")
	]
	for cleaner in cleaners:
		assert cleaner.stdin is not None
		cleaner.stdin.write("go\n")
		cleaner.stdin.flush()
	outcomes = []
	for cleaner in cleaners:
		out, err = cleaner.communicate(timeout=120)
		assert cleaner.returncode == 0, err
		outcomes.append(json.loads(out))

	assert [o["removed"] for o in outcomes] == [["m290"], ["m295"]]
	assert [o["waited"] for o in outcomes].count(True) == 1, f"one waited for the other's lock: {outcomes}"
	left = [props["message_id"] for _body, props in _drain(raw_channel, f"{dead_queue}.dead")]
	assert sorted(left) == sorted(i for i in ids if i not in ("m290", "m295")), "nothing lost, no copy twice"


def test_an_outgoing_replay_holds_the_relay_claim_while_it_is_pending(
	connection: BrokerConnection, store_url: str, unique_name: str, raw_channel: Any
) -> None:
	"""A replayed outgoing message is Pending until the broker confirms it; a relay reading it then would
	send it a second time. The replay takes the store's relay claim for that span: while a relay holds
	it, the replay waits, then refuses and sends nothing; once it is free the replay goes."""
	from frappe_eda.messaging.errors import ReplayRefused
	from frappe_eda.stores import open_store

	exchange = f"{unique_name}.out"
	raw_channel.exchange_declare(exchange, "topic", durable=True)
	raw_channel.queue_declare(f"{unique_name}.watch", durable=True)
	raw_channel.queue_bind(f"{unique_name}.watch", exchange, "#")
	store, relay_store = open_store(store_url), open_store(store_url)
	try:
		publisher = Publisher(connection, store, exchange=exchange)
		sent = publisher.publish("order.created", {})
		store.set_status(Direction.OUTGOING, [sent.id], Status.FAILED)
		replayer = Replayer(publisher, store, relay_wait=0.5)
		with relay_store.relay_claim() as relaying:
			assert relaying
			with pytest.raises(ReplayRefused, match="outbox relay"):
				replayer.replay(sent.id)
			record = store.get(sent.id, Direction.OUTGOING)
			assert record is not None and record.status is Status.FAILED, "nothing was reopened"
		assert _depth(connection, f"{unique_name}.watch") == 1, "only the first publish went out"
		result = replayer.replay(sent.id)
		assert result.sent
		record = store.get(sent.id, Direction.OUTGOING)
		assert record is not None and record.status is Status.PUBLISHED
		assert _depth(connection, f"{unique_name}.watch") == 2
	finally:
		raw_channel.queue_delete(f"{unique_name}.watch")
		raw_channel.exchange_delete(exchange)
		relay_store.close()
		store.close()


def test_a_record_processed_since_it_was_read_is_not_replayed_from_the_old_copy(
	connection: BrokerConnection, store: MessageStore, unique_name: str, raw_channel: Any
) -> None:
	"""A bulk replay works from records read (and claimed) before it sends. A Failed message whose retry
	was processed in between must not be reopened from the old copy: its handler would run again."""
	from dataclasses import replace

	from frappe_eda.testing.store_contract import incoming

	queue = f"{unique_name}.meanwhile"
	raw_channel.queue_declare(queue, durable=True)
	try:
		read = incoming(f"{unique_name}-m", queue, status=Status.FAILED, attempts=1)
		store.save([read])
		store.save([replace(read, status=Status.PROCESSED)])  # the retry ran meanwhile
		[result] = Replayer(Publisher(connection, store), store).replay_many([read])
		assert not result.sent and "while the replay was starting" in result.detail
		current = store.get(read.message_id, Direction.INCOMING, queue)
		assert current is not None and current.status is Status.PROCESSED
		assert _depth(connection, queue) == 0, "nothing was sent"
	finally:
		raw_channel.queue_delete(queue)
