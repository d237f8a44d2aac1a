"""``publish()`` writes one durable commit per call: what it says about a message, and when (issue #13).

The PENDING row is durable before the message goes out; PUBLISHED is written later (the next call,
``flush()``, ``close()``), and only for what the broker confirmed. A crash in between leaves the row
PENDING, and the relay sends the message again: a duplicate the consumers' inbox drops, never a loss.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import PublishNacked, UnroutableMessage
from frappe_eda.messaging.outbox import OutboxRelay
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.store import Direction, MessageStore, Status
from frappe_eda.messaging.topology import Binding, Exchange, Queue, Topology, TopologyDeclarer
from frappe_eda.stores import open_store
from tests.outbox_rows import queued_ids


@pytest.fixture
def wired(connection: BrokerConnection, unique_name: str) -> Iterator[tuple[str, str]]:
	"""An exchange with a queue bound to ``order.#`` and a queue that refuses every message (``full.#``);
	``lost.*`` reaches no queue."""
	exchange, queue, full = f"{unique_name}.ex", f"{unique_name}.q", f"{unique_name}.full"
	topology = Topology(
		(Exchange(exchange),),
		(Queue(queue), Queue(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})),
		(Binding(exchange, queue, "order.#"), Binding(exchange, full, "full.#")),
	)
	declarer = TopologyDeclarer(connection)
	declarer.declare(topology)
	yield exchange, queue
	declarer.delete(topology)
	declarer.close()


def _status(store: MessageStore, message: Message) -> Status:
	record = store.get(message.id, Direction.OUTGOING)
	assert record is not None
	return record.status


def test_published_status_is_written_by_the_next_call_or_close(
	connection: BrokerConnection, store: MessageStore, wired: tuple[str, str], raw_channel
) -> None:
	exchange, queue = wired
	publisher = Publisher(connection, store, exchange=exchange, status_behind=True)

	first = publisher.publish("order.created", {"n": 1})
	assert _status(store, first) is Status.PENDING  # confirmed, its status not written yet
	second = publisher.publish("order.created", {"n": 2})
	assert _status(store, first) is Status.PUBLISHED  # written with the second call's PENDING row
	assert _status(store, second) is Status.PENDING
	publisher.close()

	assert _status(store, second) is Status.PUBLISHED
	assert queued_ids(raw_channel, queue) == [first.id, second.id]


def test_a_crash_after_the_confirm_leaves_the_message_pending_and_the_relay_sends_it_again(
	connection: BrokerConnection, store_url: str, wired: tuple[str, str], raw_channel
) -> None:
	exchange, queue = wired
	store = open_store(store_url)
	message = Publisher(connection, store, exchange=exchange, status_behind=True).publish(
		"order.created", {"n": 1}
	)
	store.close()  # the process dies here: the publisher never writes the PUBLISHED it held

	reopened = open_store(store_url)
	assert _status(reopened, message) is Status.PENDING
	relayed = OutboxRelay(Publisher(connection, reopened, exchange=exchange), reopened).drain()

	assert relayed == 1 and _status(reopened, message) is Status.PUBLISHED
	assert queued_ids(raw_channel, queue) == [message.id, message.id]  # a duplicate, never a loss
	reopened.close()


@pytest.mark.parametrize("wait", [True, False])
def test_a_nacked_publish_is_never_recorded_published(
	connection: BrokerConnection, store: MessageStore, wired: tuple[str, str], wait: bool
) -> None:
	exchange, _queue = wired
	publisher = Publisher(connection, store, exchange=exchange, status_behind=True)
	refused = Message("full.item", {"n": 1})

	if wait:
		with pytest.raises(PublishNacked):
			publisher.publish(refused)
	else:
		publisher.publish(refused, wait=False)
		assert _status(store, refused) is Status.PENDING
		report = publisher.flush()
		assert list(report.failed) == [refused.id] and not report.confirmed
	publisher.publish("order.created", {"n": 2})  # the next call writes nothing wrong about it
	publisher.close()

	assert _status(store, refused) is Status.FAILED
	assert [e.exception_type for e in store.errors(refused.id)] == [
		"frappe_eda.messaging.errors.PublishNacked"
	]


def test_publish_without_waiting_records_each_answer_when_it_is_taken_in(
	connection: BrokerConnection, store: MessageStore, wired: tuple[str, str], raw_channel
) -> None:
	exchange, queue = wired
	publisher = Publisher(connection, store, exchange=exchange, status_behind=True)

	sent = [publisher.publish("order.created", {"n": n}, wait=False) for n in range(20)]
	lost = publisher.publish("lost.item", {"n": 20}, wait=False)
	assert all(_status(store, m) is not Status.FAILED for m in sent)  # nothing said before the broker
	report = publisher.flush()

	# flush() reports what it wrote: the answers later calls had not taken in already.
	assert set(report.confirmed) <= {m.id for m in sent}
	assert isinstance(report.failed[lost.id], UnroutableMessage)
	assert {_status(store, m) for m in sent} == {Status.PUBLISHED}
	assert _status(store, lost) is Status.FAILED
	assert queued_ids(raw_channel, queue) == [m.id for m in sent]
	publisher.close()


def test_a_message_sent_without_waiting_survives_a_crash_before_its_confirm_was_taken_in(
	connection: BrokerConnection, store_url: str, wired: tuple[str, str], raw_channel
) -> None:
	exchange, queue = wired
	store = open_store(store_url)
	message = Publisher(connection, store, exchange=exchange, status_behind=True).publish(
		"order.created", {"n": 1}, wait=False
	)
	store.close()  # the process dies: the confirm is never read

	reopened = open_store(store_url)
	assert _status(reopened, message) is Status.PENDING
	OutboxRelay(Publisher(connection, reopened, exchange=exchange), reopened).drain()

	assert _status(reopened, message) is Status.PUBLISHED
	assert queued_ids(raw_channel, queue) == [message.id, message.id]
	reopened.close()


def test_a_connection_lost_with_messages_in_flight_sends_them_again_on_the_next_call(
	connection: BrokerConnection, store: MessageStore, wired: tuple[str, str], raw_channel
) -> None:
	exchange, queue = wired
	publisher = Publisher(connection, store, exchange=exchange, status_behind=True)
	before = [publisher.publish("order.created", {"n": n}, wait=False) for n in range(5)]
	connection.reconnect()  # the old connection (and the publisher's channel on it) is gone

	after = publisher.publish("order.created", {"n": 5})
	publisher.close()

	assert {_status(store, m) for m in [*before, after]} == {Status.PUBLISHED}
	arrived = queued_ids(raw_channel, queue)
	assert set(arrived) == {m.id for m in [*before, after]}  # some possibly twice, none lost
