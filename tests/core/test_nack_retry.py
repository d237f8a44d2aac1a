"""A nack is not a no (issue #26): what the broker refused for now is sent again, in order, on a fresh
channel, for a bounded time; only what outlasts the bound is FAILED, and the relay sends that again.

On a cluster the nacks come from a quorum queue changing leader (``tests/faults/cluster_scenarios``).
Here, on the single test broker, a policy makes the queue refuse every publish (``max-length`` 0 with
``reject-publish``) and is cleared once the publisher has been nacked: the same Basic.Nack, then the
same recovery. ``retry_refused_for`` is given explicitly: against a single broker it is 0 by default.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pika
import pytest

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import PublishNacked, StillNacked
from frappe_eda.messaging.outbox import OutboxRelay
from frappe_eda.messaging.publisher import Publisher, envelope_from_record
from frappe_eda.messaging.refusals import RETRY_REFUSED_FOR
from frappe_eda.messaging.store import Direction, MessageStore, Status
from frappe_eda.messaging.topology import Binding, Exchange, Queue, Topology, TopologyDeclarer
from tests.outbox_rows import pending_row, queued_ids

STILL_NACKED = "frappe_eda.messaging.errors.StillNacked"


def _ctl(*args: str) -> None:
	subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


class Refusing:
	"""A queue that nacks every publish while a policy says so; ``clear_when_nacked`` lifts the policy
	as soon as the publisher logs a nack, from another thread, while the publisher waits to try again."""

	def __init__(self, vhost: str, amqp_url: str, queue: str) -> None:
		self.vhost, self.amqp_url, self.queue = vhost, amqp_url, queue
		self.policy = f"{queue}-refuse"
		self.nacked = threading.Event()
		self._lifter: threading.Thread | None = None

	def refuse(self) -> None:
		definition = json.dumps({"max-length": 0, "overflow": "reject-publish"})
		_ctl(
			"set_policy", "-p", self.vhost, "--apply-to", "queues", self.policy, f"^{self.queue}$", definition
		)
		self._until(lambda refused: refused, "the policy to refuse")

	def clear(self) -> None:
		"""Lift the policy (a no-op when it is gone already)."""
		subprocess.run(
			["rabbitmqctl", "-q", "clear_policy", "-p", self.vhost, self.policy],
			capture_output=True,
			timeout=120,
		)

	def clear_when_nacked(self) -> None:
		def lift() -> None:
			if self.nacked.wait(timeout=60):
				self.clear()

		self._lifter = threading.Thread(target=lift, daemon=True)
		self._lifter.start()

	def join(self) -> None:
		if self._lifter is not None:
			self._lifter.join(timeout=60)

	def _until(self, wanted: Callable[[bool], bool], what: str) -> None:
		"""Probe with a confirmed publish to the default exchange until the queue answers as wanted
		(a policy reaches the queue a moment after ``set_policy`` returns); the probe is purged."""
		connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
		try:
			channel = connection.channel()
			channel.confirm_delivery()
			for _ in range(100):
				try:
					channel.basic_publish("", self.queue, b"probe")
					refused = False
				except pika.exceptions.NackError:
					refused = True
				channel.queue_purge(self.queue)
				if wanted(refused):
					return
				time.sleep(0.1)
			raise AssertionError(f"timed out waiting for {what}")
		finally:
			connection.close()


class _NackSeen(logging.Handler):
	def __init__(self, event: threading.Event) -> None:
		super().__init__()
		self.event = event
		self.rounds = 0

	def emit(self, record: logging.LogRecord) -> None:
		if "nacked" in record.getMessage():
			self.rounds += 1
			self.event.set()


@pytest.fixture
def refusing(
	connection: BrokerConnection, vhost: str, amqp_url: str, unique_name: str
) -> Iterator[tuple[str, str, Refusing]]:
	"""An exchange whose ``order.#`` queue refuses every publish until the publisher was nacked once."""
	exchange, queue = f"{unique_name}.ex", f"{unique_name}.q"
	topology = Topology((Exchange(exchange),), (Queue(queue),), (Binding(exchange, queue, "order.#"),))
	declarer = TopologyDeclarer(connection)
	declarer.declare(topology)
	refusal = Refusing(vhost, amqp_url, queue)
	seen = _NackSeen(refusal.nacked)
	logger = logging.getLogger("frappe_eda.messaging.publisher")
	logger.addHandler(seen)
	refusal.refuse()
	try:
		yield exchange, queue, refusal
	finally:
		logger.removeHandler(seen)
		refusal.join()
		refusal.clear()
		declarer.delete(topology)
		declarer.close()


def _statuses(store: MessageStore, messages: list[Message]) -> list[Status]:
	records = [store.get(m.id, Direction.OUTGOING) for m in messages]
	return [r.status if r is not None else Status.RECEIVED for r in records]


def _publish_every_way(
	way: str, publisher: Publisher, store: MessageStore, messages: list[Message], exchange: str
) -> None:
	if way == "publish":
		for message in messages:
			publisher.publish(message)
	elif way == "publish_wait_false":
		for message in messages:
			publisher.publish(message, wait=False)
		publisher.flush()
	elif way == "publish_many":
		report = publisher.publish_many(messages)
		assert report.confirmed == [m.id for m in messages] and not report.failed
	elif way == "relay":
		base = messages[0].created_at  # written in this order, a millisecond apart
		store.save(
			[pending_row(m, exchange, base + timedelta(milliseconds=n)) for n, m in enumerate(messages)]
		)
		assert OutboxRelay(publisher, store).drain() == len(messages)
	else:
		raise AssertionError(way)


@pytest.mark.parametrize("way", ["publish", "publish_wait_false", "publish_many", "relay"])
def test_a_nack_that_passes_is_sent_again_in_order_and_recorded_published(
	connection: BrokerConnection,
	store: MessageStore,
	refusing: tuple[str, str, Refusing],
	raw_channel,
	way: str,
) -> None:
	exchange, queue, refusal = refusing
	publisher = Publisher(connection, store, exchange=exchange, retry_refused_for=60)
	messages = [Message("order.created", {"n": n}) for n in range(5)]
	refusal.clear_when_nacked()

	_publish_every_way(way, publisher, store, messages, exchange)
	publisher.close()

	assert refusal.nacked.is_set(), "the queue never refused: nothing was tried again"
	assert _statuses(store, messages) == [Status.PUBLISHED] * len(messages)
	assert not any(store.errors(m.id) for m in messages)
	assert queued_ids(raw_channel, queue) == [m.id for m in messages]  # once each, in order


def test_a_nack_outlasting_the_bound_fails_with_still_nacked_and_the_relay_sends_it_later(
	connection: BrokerConnection, store: MessageStore, refusing: tuple[str, str, Refusing], raw_channel
) -> None:
	exchange, queue, refusal = refusing
	publisher = Publisher(connection, store, exchange=exchange, retry_refused_for=0.3)
	refused = Message("order.created", {"n": 1})
	full = Message("order.created", {"n": 2})

	with pytest.raises(StillNacked, match=r"after 0\.[3-9]s of tries on fresh channels"):
		publisher.publish(refused)
	# A nack recorded as a plain PublishNacked (a single broker's full queue) is never sent again alone.
	store.save([pending_row(full, exchange)])
	store.set_status(Direction.OUTGOING, [full.id], Status.FAILED, last_error="PublishNacked: full")

	[record] = [store.get(refused.id, Direction.OUTGOING)]
	assert record is not None and record.status is Status.FAILED
	assert record.last_error.startswith(f"{STILL_NACKED}: ")
	assert [e.exception_type for e in store.errors(refused.id)] == [STILL_NACKED]

	# Not yet: it rests for retry_refused_after before a relay takes it again.
	assert OutboxRelay(publisher, store, retry_refused_after=3600).drain() == 0
	assert _statuses(store, [refused]) == [Status.FAILED]

	refusal.clear()
	relay = OutboxRelay(publisher, store, retry_refused_after=0)
	assert relay.drain() == 1 and relay.requeued == 1
	publisher.close()

	again = store.get(refused.id, Direction.OUTGOING)
	assert again is not None and again.status is Status.PUBLISHED and again.resolved
	assert all(e.resolved for e in store.errors(refused.id))
	assert _statuses(store, [full]) == [Status.FAILED]
	assert queued_ids(raw_channel, queue) == [refused.id]


def test_a_replay_rides_through_a_nack(
	connection: BrokerConnection, store: MessageStore, refusing: tuple[str, str, Refusing], raw_channel
) -> None:
	"""The desk's and the CLI's replays send through ``Publisher.send``: a nack there is retried too."""
	exchange, queue, refusal = refusing
	publisher = Publisher(connection, store, exchange=exchange, retry_refused_for=60)
	message = Message("order.created", {"n": 1})
	refusal.clear_when_nacked()

	report = publisher.send([envelope_from_record(pending_row(message, exchange))])
	publisher.close()

	assert report.confirmed == [message.id] and refusal.nacked.is_set()
	assert queued_ids(raw_channel, queue) == [message.id]


def test_only_a_node_list_makes_a_publisher_retry_nacks_by_default(amqp_url: str) -> None:
	single = BrokerConnection(BrokerSettings(url=amqp_url))
	cluster = BrokerConnection(BrokerSettings(url=amqp_url, nodes=("mq2:5672", "mq3:5672")))

	assert Publisher(single).retry_refused_for == 0
	assert Publisher(cluster).retry_refused_for == RETRY_REFUSED_FOR
	assert Publisher(single, retry_refused_for=5).retry_refused_for == 5


def test_a_single_brokers_nack_still_fails_at_once(
	connection: BrokerConnection, store: MessageStore, refusing: tuple[str, str, Refusing]
) -> None:
	exchange, _queue, _refusal = refusing
	publisher = Publisher(connection, store, exchange=exchange)
	message = Message("order.created", {"n": 1})

	with pytest.raises(PublishNacked) as raised:
		publisher.publish(message)
	publisher.close()

	assert type(raised.value) is PublishNacked
	assert _statuses(store, [message]) == [Status.FAILED]
