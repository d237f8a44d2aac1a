from __future__ import annotations

import time

import pika

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.consumer import Worker, WorkerOptions
from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.errors import PermanentFailure
from frappe_eda.messaging.processing import Limits
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.schema import SchemaRegistry
from frappe_eda.messaging.store import Direction, MessageFilter, MessageStore, Status
from frappe_eda.messaging.topology import TopologyDeclarer, topology_for


def _worker(connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, **kwargs) -> Worker:
	return Worker(connection, registry, store, options=WorkerOptions(poll_seconds=0.1), **kwargs)


def test_handler_receives_the_published_message_and_it_is_recorded_processed(
	connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, unique_name: str
) -> None:
	seen: list[Message] = []
	registry.subscribe("order.*", queue=f"{unique_name}.orders", exchange=f"{unique_name}.ex")(seen.append)
	worker = _worker(connection, registry, store)
	worker.declare()
	sent = Publisher(connection, store, exchange=f"{unique_name}.ex").publish("order.created", {"n": 1})

	stats = worker.run(until=lambda s: s.handled >= 1, idle_timeout=10)

	assert stats.processed == 1
	assert seen == [sent]
	record = store.get(sent.id, Direction.INCOMING, f"{unique_name}.orders")
	assert record is not None and record.status is Status.PROCESSED and record.attempts == 1


def test_failing_handler_is_retried_with_growing_delays_then_dead_lettered(
	connection: BrokerConnection,
	registry: HandlerRegistry,
	store: MessageStore,
	unique_name: str,
	raw_channel,
) -> None:
	queue = f"{unique_name}.flaky"
	calls: list[float] = []

	def always_fails(message: Message) -> None:
		calls.append(time.monotonic())
		raise RuntimeError(f"warehouse down for {message.payload['order']}")

	registry.subscribe(
		"order.*", queue=queue, exchange=f"{unique_name}.ex", max_attempts=3, retry_delays=(0.3, 1.2)
	)(always_fails)
	worker = _worker(connection, registry, store)
	worker.declare()
	sent = Publisher(connection, store, exchange=f"{unique_name}.ex").publish(
		"order.created", {"order": "SO-9"}
	)

	stats = worker.run(until=lambda s: s.dead >= 1, idle_timeout=15)

	assert (stats.retried, stats.dead, len(calls)) == (2, 1, 3)
	first_wait, second_wait = calls[1] - calls[0], calls[2] - calls[1]
	assert first_wait >= 0.3 and second_wait >= 1.2 and second_wait > first_wait
	record = store.get(sent.id, Direction.INCOMING, queue)
	assert record is not None and record.status is Status.DEAD and record.attempts == 3
	errors = store.errors(sent.id, queue)
	assert [e.attempt for e in errors] == [1, 2, 3]
	assert len({e.fingerprint for e in errors}) == 1
	assert "RuntimeError: warehouse down for SO-9" in errors[-1].traceback
	_method, properties, body = raw_channel.basic_get(f"{queue}.dead", auto_ack=True)
	outgoing = store.get(sent.id, Direction.OUTGOING)
	assert outgoing is not None and body == outgoing.body.encode()
	assert properties.headers["x-eda-error-type"] == "RuntimeError"
	assert properties.headers["x-eda-attempt"] == 3
	assert properties.headers["x-eda-routing-key"] == "order.created"


def test_permanent_failure_is_dead_lettered_at_once(
	connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, unique_name: str
) -> None:
	queue = f"{unique_name}.strict"
	calls: list[Message] = []

	def refuses(message: Message) -> None:
		calls.append(message)
		raise PermanentFailure("customer CUST-1 is blocked")

	registry.subscribe("order.*", queue=queue, exchange=f"{unique_name}.ex", max_attempts=5)(refuses)
	worker = _worker(connection, registry, store)
	worker.declare()
	sent = Publisher(connection, store, exchange=f"{unique_name}.ex").publish("order.created", {})

	stats = worker.run(until=lambda s: s.dead >= 1, idle_timeout=10)

	assert (len(calls), stats.retried, stats.dead) == (1, 0, 1)
	assert TopologyDeclarer(connection).queue_depth(f"{queue}.dead") == 1
	record = store.get(sent.id, Direction.INCOMING, queue)
	assert record is not None and record.status is Status.DEAD
	assert "customer CUST-1 is blocked" in record.last_error


def test_duplicate_delivery_runs_handler_once(
	connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, unique_name: str
) -> None:
	queue = f"{unique_name}.once"
	calls: list[str] = []
	registry.subscribe("order.*", queue=queue, exchange=f"{unique_name}.ex")(lambda m: calls.append(m.id))
	worker = _worker(connection, registry, store)
	worker.declare()
	publisher = Publisher(connection, exchange=f"{unique_name}.ex")
	message = Message("order.created", {"n": 1})
	publisher.publish(message)
	publisher.publish(message)  # the same id again, as a producer retry after a lost confirm would

	stats = worker.run(until=lambda s: s.handled >= 2, idle_timeout=10)
	publisher.publish(message)  # and once more after the first copy was committed and acked
	stats = worker.run(until=lambda s: s.handled >= 3, idle_timeout=10)

	assert calls == [message.id]
	assert (stats.processed, stats.duplicates) == (1, 2)


def test_schema_violation_on_consume_is_dead_lettered_with_a_precise_path(
	connection: BrokerConnection, registry: HandlerRegistry, store: MessageStore, unique_name: str
) -> None:
	queue = f"{unique_name}.validated"
	calls: list[Message] = []
	registry.subscribe("order.*", queue=queue, exchange=f"{unique_name}.ex")(calls.append)
	schemas = SchemaRegistry(
		{
			"order.created": {
				"type": "object",
				"required": ["items"],
				"properties": {"items": {"type": "array", "items": {"properties": {"qty": {"minimum": 0}}}}},
			}
		}
	)
	worker = _worker(connection, registry, store, schemas=schemas)
	worker.declare()
	bad = Message("order.created", {"items": [{"qty": 1}, {"qty": 2}, {"qty": 3}, {"qty": -2}]})
	Publisher(connection, exchange=f"{unique_name}.ex").publish(bad)  # a producer without the schema

	stats = worker.run(until=lambda s: s.dead >= 1, idle_timeout=10)

	assert calls == [] and stats.dead == 1
	[error] = store.errors(bad.id, queue)
	assert error.exception_type == "frappe_eda.messaging.errors.SchemaViolation"
	assert "items[3].qty: -2 is less than the minimum of 0" in error.error


BAD_INPUTS = [
	("not json", b"{not json", "application/json", {}, "InvalidJson"),
	("invalid utf-8", b'{"id": "\xff\xfe"}', "application/json", {}, "InvalidEncoding"),
	("empty body", b"", "application/json", {}, "EmptyBody"),
	("oversize", b'{"pad": "' + b"x" * 5000 + b'"}', "application/json", {}, "MessageTooLarge"),
	("missing id", b'{"type": "order.created", "payload": {}}', "application/json", {}, "MissingMessageId"),
	(
		"duplicated id",
		b'{"id": "a", "id": "b", "type": "order.created", "payload": {}}',
		"application/json",
		{},
		"DuplicateKey",
	),
	(
		"wrong content type",
		b'{"id": "x", "type": "order.created", "payload": {}}',
		"text/plain",
		{},
		"UnsupportedContentType",
	),
	(
		"header of the wrong type",
		b'{"id": "y", "type": "order.created", "payload": {}}',
		"application/json",
		{"x-eda-attempt": "two"},
		"InvalidHeader",
	),
	(
		"1000-deep nesting",
		b'{"id": "z", "type": "order.created", "payload": ' + b"[" * 1000 + b"]" * 1000 + b"}",
		"application/json",
		{},
		"NestingTooDeep",
	),
	(
		"unknown routing key",
		b'{"id": "u", "type": "order.vanished", "payload": {}}',
		"application/json",
		{"x-eda-routing-key": "order.vanished"},
		"UnknownMessageType",
	),
]


def test_malformed_input_is_recorded_and_dead_lettered_while_good_messages_keep_flowing(
	connection: BrokerConnection,
	registry: HandlerRegistry,
	store: MessageStore,
	unique_name: str,
	raw_channel,
) -> None:
	queue = f"{unique_name}.intake"
	processed: list[int] = []
	registry.subscribe("order.created", queue=queue, exchange=f"{unique_name}.ex", exchange_type="direct")(
		lambda m: processed.append(m.payload["n"])
	)
	worker = Worker(
		connection, registry, store, options=WorkerOptions(poll_seconds=0.1, limits=Limits(max_bytes=4096))
	)
	worker.declare()
	for n, (_label, body, content_type, headers, _error) in enumerate(BAD_INPUTS):
		raw_channel.basic_publish(
			"", queue, body, pika.BasicProperties(content_type=content_type, headers=headers, delivery_mode=2)
		)
		good = Message("order.created", {"n": n})
		raw_channel.basic_publish(
			f"{unique_name}.ex",
			"order.created",
			encode(good),
			pika.BasicProperties(content_type="application/json", delivery_mode=2),
		)

	stats = worker.run(until=lambda s: s.handled >= 2 * len(BAD_INPUTS), idle_timeout=15)

	assert processed == list(range(len(BAD_INPUTS)))
	assert stats.dead == len(BAD_INPUTS) and stats.retried == 0
	dead = store.find(MessageFilter(direction=Direction.INCOMING, statuses=(Status.DEAD,)))
	kinds = sorted(
		e.exception_type.rsplit(".", 1)[-1] for r in dead for e in store.errors(r.message_id, queue)
	)
	assert kinds == sorted(expected for *_, expected in BAD_INPUTS)
	assert TopologyDeclarer(connection).queue_depth(f"{queue}.dead") == len(BAD_INPUTS)


def test_handler_longer_than_the_heartbeat_keeps_the_connection(
	amqp_url: str, store: MessageStore, unique_name: str
) -> None:
	registry = HandlerRegistry()
	registry.subscribe("slow.#", queue=f"{unique_name}.slow", exchange=f"{unique_name}.ex")(
		lambda m: time.sleep(7)
	)
	with BrokerConnection(BrokerSettings(url=amqp_url, heartbeat=2)) as connection:
		worker = _worker(connection, registry, store)
		worker.declare()
		Publisher(connection, exchange=f"{unique_name}.ex").publish("slow.job", {})
		stats = worker.run(until=lambda s: s.handled >= 1, idle_timeout=20)
		assert (stats.processed, stats.reconnects) == (1, 0)
		assert connection.is_open
		TopologyDeclarer(connection).delete(topology_for(registry, RetryPolicy()))


def test_deliveries_are_screened_on_the_loop_thread_and_a_screening_fault_falls_back_to_the_handler_thread(
	connection: BrokerConnection,
	registry: HandlerRegistry,
	store: MessageStore,
	unique_name: str,
	caplog,
) -> None:
	import threading

	seen: list[int] = []
	registry.subscribe("order.*", queue=f"{unique_name}.orders", exchange=f"{unique_name}.ex")(
		lambda m: seen.append(m.payload["n"])
	)
	worker = _worker(connection, registry, store)
	worker.declare()
	screen = worker.processor.screen
	screened_on: list[str] = []

	def flaky_screen(delivery):  # type: ignore[no-untyped-def]
		screened_on.append(threading.current_thread().name)
		if len(screened_on) == 1:
			raise RuntimeError("screening broke")
		return screen(delivery)

	worker.processor.screen = flaky_screen  # type: ignore[method-assign]
	publisher = Publisher(connection, store, exchange=f"{unique_name}.ex")
	publisher.publish_many([Message("order.created", {"n": n}) for n in range(3)])

	stats = worker.run(until=lambda s: s.handled >= 3, idle_timeout=10)

	assert stats.processed == 3 and sorted(seen) == [0, 1, 2]
	loop = threading.current_thread().name
	# Three screenings on the loop thread (the first one failed), one again on the handler thread.
	assert screened_on.count(loop) == 3 and len(screened_on) == 4
	assert "could not screen delivery" in caplog.text
