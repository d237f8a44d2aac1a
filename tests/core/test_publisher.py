from __future__ import annotations

import time

import pytest

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.envelope import Message, decode
from frappe_eda.messaging.errors import BrokerUnavailable, PublishNacked, SchemaViolation, UnroutableMessage
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.schema import SchemaRegistry
from frappe_eda.messaging.store import Direction, MessageStore, Status
from frappe_eda.messaging.topology import Binding, Exchange, Queue, Topology, TopologyDeclarer


def _declare(connection: BrokerConnection, topology: Topology) -> TopologyDeclarer:
	declarer = TopologyDeclarer(connection)
	declarer.declare(topology)
	return declarer


def test_confirmed_publish_is_recorded_as_published_and_reaches_the_queue(
	connection: BrokerConnection, store: MessageStore, unique_name: str, raw_channel
) -> None:
	topology = Topology(
		(Exchange(f"{unique_name}.ex"),),
		(Queue(f"{unique_name}.q"),),
		(Binding(f"{unique_name}.ex", f"{unique_name}.q", "order.*"),),
	)
	declarer = _declare(connection, topology)
	publisher = Publisher(connection, store, exchange=f"{unique_name}.ex", source="erp")

	message = publisher.publish("order.created", {"name": "SO-1"})
	publisher.close()  # a returned publish() has its PUBLISHED written by the next call or by close()

	record = store.get(message.id, Direction.OUTGOING)
	assert record is not None and record.status is Status.PUBLISHED
	_method, properties, body = raw_channel.basic_get(f"{unique_name}.q", auto_ack=True)
	assert properties.delivery_mode == 2 and properties.content_type == "application/json"
	assert properties.message_id == message.id
	assert decode(body) == message
	assert record.body.encode() == body
	declarer.delete(topology)


def test_unroutable_publish_raises_and_is_recorded_as_failed(
	connection: BrokerConnection, store: MessageStore, unique_name: str
) -> None:
	topology = Topology((Exchange(f"{unique_name}.ex"),))
	declarer = _declare(connection, topology)
	publisher = Publisher(connection, store, exchange=f"{unique_name}.ex")
	message = Message("nobody.listens", {"x": 1})

	with pytest.raises(UnroutableMessage, match="no queue bound"):
		publisher.publish(message)

	record = store.get(message.id, Direction.OUTGOING)
	assert record is not None and record.status is Status.FAILED
	assert "UnroutableMessage" in record.last_error
	assert [e.exception_type for e in store.errors(message.id)] == [
		"frappe_eda.messaging.errors.UnroutableMessage"
	]
	declarer.delete(topology)


def test_publish_nacked_by_a_full_queue_raises_and_is_recorded_as_failed(
	connection: BrokerConnection, store: MessageStore, unique_name: str
) -> None:
	queue = Queue(f"{unique_name}.full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
	topology = Topology(
		(Exchange(f"{unique_name}.ex"),), (queue,), (Binding(f"{unique_name}.ex", queue.name, "#"),)
	)
	declarer = _declare(connection, topology)
	publisher = Publisher(connection, store, exchange=f"{unique_name}.ex")
	publisher.publish("a", {})

	second = Message("b", {})
	with pytest.raises(PublishNacked):
		publisher.publish(second)

	record = store.get(second.id, Direction.OUTGOING)
	assert record is not None and record.status is Status.FAILED
	declarer.delete(topology)


def test_batch_publish_confirms_every_message_in_order(
	connection: BrokerConnection, store: MessageStore, unique_name: str, raw_channel
) -> None:
	queue = Queue(f"{unique_name}.q")
	topology = Topology(
		(Exchange(f"{unique_name}.ex"),), (queue,), (Binding(f"{unique_name}.ex", queue.name, "#"),)
	)
	declarer = _declare(connection, topology)
	publisher = Publisher(connection, store, exchange=f"{unique_name}.ex", window=64)
	messages = [Message("n", {"i": i}) for i in range(1000)]

	report = publisher.publish_many(messages)

	assert report.confirmed == [m.id for m in messages] and not report.failed
	assert store.counts()[(Direction.OUTGOING, Status.PUBLISHED)] == 1000
	assert declarer.queue_depth(queue.name) == 1000
	first = raw_channel.basic_get(queue.name, auto_ack=True)
	assert decode(first[2]).payload == {"i": 0}
	declarer.delete(topology)


def test_schema_violation_is_raised_before_anything_is_stored_or_sent(
	connection: BrokerConnection, store: MessageStore, unique_name: str
) -> None:
	schemas = SchemaRegistry(
		{
			"order.created": {
				"type": "object",
				"properties": {
					"items": {
						"type": "array",
						"items": {"type": "object", "properties": {"qty": {"type": "number", "minimum": 0}}},
					}
				},
			}
		}
	)
	publisher = Publisher(connection, store, exchange=f"{unique_name}.none", schemas=schemas)

	with pytest.raises(SchemaViolation, match=r"items\[1\]\.qty: -2 is less than the minimum of 0"):
		publisher.publish("order.created", {"items": [{"qty": 1}, {"qty": -2}]})

	assert store.counts() == {}


def test_publishing_to_a_missing_exchange_fails_those_messages_and_sends_the_rest(
	connection: BrokerConnection, store: MessageStore, unique_name: str
) -> None:
	from frappe_eda.messaging.errors import ExchangeNotFound

	queue = Queue(f"{unique_name}.q")
	topology = Topology(
		(Exchange(f"{unique_name}.ex"),), (queue,), (Binding(f"{unique_name}.ex", queue.name, "#"),)
	)
	declarer = _declare(connection, topology)
	publisher = Publisher(connection, store, exchange=f"{unique_name}.ex")
	good = Message("a", {})
	publisher.publish(good)
	lost_exchange = Message("b", {})

	with pytest.raises(ExchangeNotFound, match="does not exist"):
		publisher.publish(lost_exchange, exchange=f"{unique_name}.nowhere")
	after = publisher.publish(Message("c", {}))  # the publisher carries on, on a new channel
	publisher.flush()

	statuses = {m.id: store.get(m.id, Direction.OUTGOING).status for m in (good, lost_exchange, after)}
	assert statuses == {
		good.id: Status.PUBLISHED,
		lost_exchange.id: Status.FAILED,
		after.id: Status.PUBLISHED,
	}
	assert declarer.queue_depth(queue.name) == 2
	declarer.delete(topology)


def test_each_chunk_is_recorded_before_it_goes_out(
	connection: BrokerConnection,
	store: MessageStore,
	unique_name: str,
	monkeypatch: pytest.MonkeyPatch,
) -> None:
	"""The store writes of a batch overlap the broker's work on the previous chunk, but a chunk never
	leaves before its own PENDING rows are durable: when the second write fails, only the first chunk
	reached the queue, and it is on record (PENDING, so the outbox relay would send it again)."""
	queue = Queue(f"{unique_name}.q")
	topology = Topology(
		(Exchange(f"{unique_name}.ex"),), (queue,), (Binding(f"{unique_name}.ex", queue.name, "#"),)
	)
	declarer = _declare(connection, topology)
	publisher = Publisher(connection, store, exchange=f"{unique_name}.ex", record_batch=3)
	saves: list[int] = []
	save = store.save

	def failing_second_save(records):  # type: ignore[no-untyped-def]
		saves.append(len(records))
		if len(saves) == 2:
			raise RuntimeError("the database went away")
		save(records)

	monkeypatch.setattr(store, "save", failing_second_save)
	messages = [Message("n", {"i": i}) for i in range(10)]

	with pytest.raises(RuntimeError, match="went away"):
		publisher.publish_many(messages)

	monkeypatch.undo()
	deadline = time.monotonic() + 10
	while declarer.queue_depth(queue.name) < 3 and time.monotonic() < deadline:
		connection.sleep(0.05)
	connection.sleep(0.3)  # anything sent after the first chunk would have arrived by now
	assert declarer.queue_depth(queue.name) == 3
	recorded = [store.get(m.id, Direction.OUTGOING) for m in messages]
	assert [r.status if r else None for r in recorded] == [Status.PENDING] * 3 + [None] * 7
	publisher.publish("after", {})  # the publisher carries on, on a new channel
	declarer.delete(topology)


def test_messages_that_could_not_go_out_stay_pending_for_the_relay(store: MessageStore) -> None:
	unreachable = BrokerConnection(
		BrokerSettings(
			url="amqp://guest:guest@127.0.0.1:1/%2F", reconnect_attempts=1, reconnect_max_wait=0.01
		)
	)
	publisher = Publisher(unreachable, store, exchange="anywhere", record_batch=2)
	messages = [Message("n", {"i": i}) for i in range(5)]

	with pytest.raises(BrokerUnavailable):
		publisher.publish_many(messages)

	assert [store.get(m.id, Direction.OUTGOING).status for m in messages] == [Status.PENDING] * 5


def test_bodies_larger_than_a_frame_arrive_intact_between_small_ones(
	connection: BrokerConnection, store: MessageStore, unique_name: str, raw_channel
) -> None:
	"""The publisher hands pika's queued frames to the socket in one write; a body split over several
	frames (frame_max is 128 KiB) must come out byte for byte, in order."""
	queue = Queue(f"{unique_name}.q")
	topology = Topology(
		(Exchange(f"{unique_name}.ex"),), (queue,), (Binding(f"{unique_name}.ex", queue.name, "#"),)
	)
	declarer = _declare(connection, topology)
	publisher = Publisher(connection, store, exchange=f"{unique_name}.ex", record_batch=2)
	messages = [
		Message("n", {"i": 0}),
		Message("n", {"i": 1, "text": "é" * 200_000}),
		Message("n", {"i": 2}),
		Message("n", {"i": 3, "text": "x" * 300_000}),
	]

	publisher.publish_many(messages)

	for message in messages:
		_method, _properties, body = raw_channel.basic_get(queue.name, auto_ack=True)
		assert decode(body) == message
		assert store.get(message.id, Direction.OUTGOING).body.encode() == body
	declarer.delete(topology)
