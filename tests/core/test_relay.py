"""A message the wire or the broker cannot take fails alone: in a relay batch and in ``publish_many``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.envelope import DEFAULT_MAX_BYTES, Message, decode, encode
from frappe_eda.messaging.errors import (
	BodyTooLarge,
	FieldTooLong,
	HeadersTooLarge,
	MessageTooLarge,
	PublishRefused,
	UnencodableField,
)
from frappe_eda.messaging.outbox import OutboxRelay
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.store import Direction, MessageRecord, MessageStore, Status
from frappe_eda.messaging.topology import Binding, Exchange, Queue, Topology, TopologyDeclarer

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
LONG_KEY = "order." + "é" * 130  # 136 characters, which a column holds; 266 bytes, which AMQP cannot


@pytest.fixture
def wired(connection: BrokerConnection, unique_name: str) -> Iterator[tuple[str, str, TopologyDeclarer]]:
	"""An exchange with one queue bound to every key; plus an internal exchange nobody may publish to."""
	exchange, queue = f"{unique_name}.ex", f"{unique_name}.q"
	topology = Topology(
		(Exchange(exchange), Exchange(f"{unique_name}.internal")),
		(Queue(queue),),
		(Binding(exchange, queue, "#"),),
	)
	declarer = TopologyDeclarer(connection)
	declarer.declare(topology)
	channel = connection.channel()
	channel.exchange_declare(f"{unique_name}.sealed", "topic", durable=True, internal=True)
	channel.close()
	yield exchange, queue, declarer
	channel = connection.channel()
	channel.exchange_delete(f"{unique_name}.sealed")
	channel.close()
	declarer.delete(topology)
	declarer.close()


def _pending(
	store: MessageStore,
	n: int,
	exchange: str,
	*,
	routing_key: str = "order.created",
	payload: Any = None,
	headers: dict[str, Any] | None = None,
) -> Message:
	"""A PENDING outgoing row as the Frappe outbox writes it: in the store, never through ``publish()``."""
	message = Message(
		routing_key, {"n": n} if payload is None else payload, created_at=T0 + timedelta(seconds=n)
	)
	store.save(
		[
			MessageRecord(
				message_id=message.id,
				direction=Direction.OUTGOING,
				status=Status.PENDING,
				routing_key=routing_key,
				body=encode(message).decode(),
				exchange=exchange,
				message_type=message.type,
				headers=headers or {},
				created_at=message.created_at,
			)
		]
	)
	return message


def _status(store: MessageStore, message: Message) -> Status:
	record = store.get(message.id, Direction.OUTGOING)
	assert record is not None
	return record.status


def _queued(raw_channel, queue: str) -> list[Message]:  # type: ignore[no-untyped-def]
	found = []
	while True:
		_method, _properties, body = raw_channel.basic_get(queue, auto_ack=True)
		if body is None:
			return found
		found.append(decode(body))


def test_a_relay_batch_fails_an_over_long_key_and_a_too_large_body_alone_and_sends_the_rest(
	connection: BrokerConnection, store: MessageStore, wired, raw_channel
) -> None:
	exchange, queue, declarer = wired
	good = [_pending(store, n, exchange) for n in (1, 3, 5)]
	long_key = _pending(store, 2, exchange, routing_key=LONG_KEY)
	too_large = _pending(store, 4, exchange, payload={"text": "x" * DEFAULT_MAX_BYTES})
	relay = OutboxRelay(Publisher(connection, store, exchange=exchange), store)

	assert relay.drain() == 3

	assert [_status(store, m) for m in good] == [Status.PUBLISHED] * 3
	assert [m.id for m in _queued(raw_channel, queue)] == [m.id for m in good]
	for message, error, words in (
		(long_key, FieldTooLong, "routing key of message"),
		(too_large, BodyTooLarge, "over the limit of 1048576 bytes"),
	):
		record = store.get(message.id, Direction.OUTGOING)
		assert record is not None and record.status is Status.FAILED
		assert words in record.last_error and error.__name__ in record.last_error
		errors = store.errors(message.id)
		assert [e.exception_type.rsplit(".", 1)[1] for e in errors] == [error.__name__]
	# A FAILED row waits for a replay: the next drains send nothing, and nothing is sent twice.
	assert relay.drain() == 0 and relay.drain() == 0
	assert declarer.queue_depth(queue) == 0
	assert store.counts().get((Direction.OUTGOING, Status.PENDING), 0) == 0


def test_what_the_broker_refuses_fails_alone_and_every_other_message_is_confirmed(
	connection: BrokerConnection, store: MessageStore, wired, raw_channel, unique_name: str
) -> None:
	"""Three refusals the broker really makes: a header frame over frame_max (it would close the whole
	connection), a CC header that is not a list (406, channel closed) and an internal exchange (403)."""
	exchange, queue, declarer = wired
	good = [_pending(store, n, exchange) for n in (1, 3, 5, 7)]
	good.append(
		_pending(store, 9, exchange, headers={"x-note": "n" * 100_000})
	)  # a long string: fits a frame
	huge_headers = _pending(store, 2, exchange, headers={"x-note": "y" * 200_000})
	bad_cc = _pending(store, 4, exchange, headers={"CC": "not-a-list"})
	sealed = _pending(store, 6, f"{unique_name}.sealed")
	float_header = _pending(store, 8, exchange, headers={"x-ratio": 0.5})
	relay = OutboxRelay(Publisher(connection, store, exchange=exchange), store)

	assert relay.drain() == 5

	assert [_status(store, m) for m in good] == [Status.PUBLISHED] * 5
	# The messages unconfirmed when the broker closed the channel are sent again one at a time to find the
	# one it refuses; those it had taken before the refusal arrive twice (consumers' inboxes drop the copy).
	queued = [m.id for m in _queued(raw_channel, queue)]
	assert list(dict.fromkeys(queued)) == [m.id for m in good]
	for message, error, words in (
		(huge_headers, HeadersTooLarge, "over the broker's frame limit of 131072"),
		(bad_cc, PublishRefused, "406 PRECONDITION_FAILED"),
		(sealed, PublishRefused, "403 ACCESS_REFUSED"),
		(float_header, UnencodableField, "headers of message"),
	):
		record = store.get(message.id, Direction.OUTGOING)
		assert record is not None and record.status is Status.FAILED, message
		assert words in record.last_error and error.__name__ in record.last_error, record.last_error
	assert relay.drain() == 0
	assert declarer.queue_depth(queue) == 0
	assert connection.is_open


def test_publish_many_fails_the_message_with_an_over_long_key_and_sends_the_rest(
	connection: BrokerConnection, store: MessageStore, wired, raw_channel
) -> None:
	exchange, queue, _declarer = wired
	publisher = Publisher(connection, store, exchange=exchange)
	messages = [
		Message("order.created", {"n": 1}),
		Message(LONG_KEY, {"n": 2}),
		Message("order.created", {"n": 3}),
	]

	report = publisher.publish_many(messages)

	assert report.confirmed == [messages[0].id, messages[2].id]
	assert isinstance(report.failed[messages[1].id], FieldTooLong)
	assert "266 bytes" in str(report.failed[messages[1].id])
	assert [_status(store, m) for m in messages] == [Status.PUBLISHED, Status.FAILED, Status.PUBLISHED]
	assert [m.id for m in _queued(raw_channel, queue)] == [messages[0].id, messages[2].id]
	with pytest.raises(FieldTooLong, match="AMQP carries at most 255"):
		publisher.publish(Message(LONG_KEY, {}))


def test_a_key_no_store_could_record_is_refused_before_anything_is_stored_or_sent(
	connection: BrokerConnection, store: MessageStore, wired
) -> None:
	"""Over 255 characters a key is over 255 bytes as well, and over every store's column: raised up front."""
	exchange, queue, declarer = wired
	publisher = Publisher(connection, store, exchange=exchange)

	with pytest.raises(FieldTooLong, match=r"routing key of message \w+ is 300 bytes"):
		publisher.publish_many([Message("order.created", {}), Message("k" * 300, {})])
	with pytest.raises(FieldTooLong, match="exchange of message"):
		publisher.publish("order.created", {}, exchange="x" * 256)

	assert store.counts() == {}
	assert declarer.queue_depth(queue) == 0


def test_a_payload_over_the_consumer_limit_is_refused_before_anything_is_stored_or_sent(
	connection: BrokerConnection, store: MessageStore, wired
) -> None:
	exchange, queue, declarer = wired
	publisher = Publisher(connection, store, exchange=exchange)
	fits = {"text": "x" * (DEFAULT_MAX_BYTES - 1000)}

	with pytest.raises(BodyTooLarge, match="over the limit of 1048576 bytes that consumers accept") as raised:
		publisher.publish("order.created", {"text": "x" * DEFAULT_MAX_BYTES})
	assert isinstance(raised.value, MessageTooLarge)  # what consumers would have dead-lettered it with
	with pytest.raises(BodyTooLarge):
		publisher.publish_many(
			[Message("order.created", fits), Message("order.created", {"t": "x" * 2_000_000})]
		)
	with pytest.raises(BodyTooLarge, match="over the limit of 500 bytes"):
		Publisher(connection, store, exchange=exchange, max_bytes=500).publish(
			"order.created", {"t": "x" * 500}
		)

	assert store.counts() == {}
	assert declarer.queue_depth(queue) == 0
	publisher.publish("order.created", fits)  # up to the limit goes out
	assert declarer.queue_depth(queue) == 1


def test_a_body_over_the_brokers_max_message_size_fails_alone(
	connection: BrokerConnection, wired, raw_channel
) -> None:
	"""With ``max_bytes`` raised past the broker's own ``max_message_size`` (128 MiB by default), the
	broker closes the channel with 406: that message fails, the ones around it are confirmed."""
	exchange, queue, _declarer = wired
	publisher = Publisher(connection, exchange=exchange, max_bytes=None)
	messages = [
		Message("order.created", {"n": 1}),
		Message("order.created", {"text": "x" * (129 * 1024 * 1024)}),
		Message("order.created", {"n": 3}),
	]

	report = publisher.publish_many(messages)

	assert report.confirmed == [messages[0].id, messages[2].id]
	assert isinstance(report.failed[messages[1].id], PublishRefused)
	assert "larger than configured max size" in str(report.failed[messages[1].id])
	assert [m.id for m in _queued(raw_channel, queue)] == [messages[0].id, messages[2].id]


def test_drain_older_than_relays_only_what_is_stale(
	connection: BrokerConnection, store: MessageStore, wired, raw_channel
) -> None:
	exchange, queue, _declarer = wired
	old = [_pending(store, n, exchange) for n in (1, 2)]
	new = _pending(store, 60, exchange)
	relay = OutboxRelay(Publisher(connection, store, exchange=exchange), store)

	assert relay.drain(older_than=T0 + timedelta(seconds=30)) == 2

	assert [m.id for m in _queued(raw_channel, queue)] == [m.id for m in old]
	assert _status(store, new) is Status.PENDING
	assert relay.drain() == 1


def test_a_relay_that_cannot_get_the_claim_returns_at_once_having_sent_nothing(
	connection: BrokerConnection, store: MessageStore, wired
) -> None:
	exchange, queue, declarer = wired
	_pending(store, 1, exchange)
	relay = OutboxRelay(Publisher(connection, store, exchange=exchange), store)

	with store.relay_claim() as held:
		assert held
		assert relay.drain() == 0 and relay.relay_once() == 0
		assert declarer.queue_depth(queue) == 0
	assert relay.drain() == 1


def test_drain_with_max_batches_stops_after_them_and_says_more_is_pending(
	connection: BrokerConnection, store: MessageStore, wired, raw_channel
) -> None:
	"""What the Frappe worker relays between the batches it consumes: a few batches, not the whole outbox."""
	exchange, queue, _declarer = wired
	messages = [_pending(store, n, exchange) for n in range(7)]
	relay = OutboxRelay(Publisher(connection, store, exchange=exchange), store, batch_size=3)

	assert relay.drain(max_batches=2) == 6
	assert relay.more_pending
	assert [_status(store, m) for m in messages] == [Status.PUBLISHED] * 6 + [Status.PENDING]

	assert relay.drain(max_batches=2) == 1
	assert not relay.more_pending
	assert [m.id for m in _queued(raw_channel, queue)] == [m.id for m in messages]
