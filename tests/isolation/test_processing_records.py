"""Records written for bad input never overwrite the inbox, and ids too long for AMQP still dead-letter."""

from __future__ import annotations

import pika

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.consumer import Worker, WorkerOptions
from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.errors import PermanentFailure
from frappe_eda.messaging.processing import ORIGINAL_ROUTING_KEY, Delivery, DeliveryProcessor, Outcome
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.store import Direction, Status
from frappe_eda.stores.memory import MemoryStore


def test_a_bad_copy_of_a_processed_id_is_a_duplicate_and_keeps_the_inbox_record() -> None:
	registry = HandlerRegistry()
	calls: list[str] = []
	registry.subscribe("order.created", queue="q", exchange="ex", exchange_type="direct")(
		lambda m: calls.append(m.id)
	)
	store = MemoryStore()
	processor = DeliveryProcessor(registry, store)
	message = Message("order.created", {})
	[first] = processor.process([Delivery("q", "order.created", encode(message))])
	# The same id again, under a key the queue has no handler for (a producer reusing an id).
	stray = Delivery("q", "order.created", encode(message), headers={ORIGINAL_ROUTING_KEY: "order.vanished"})
	[second] = processor.process([stray])

	assert (first.outcome, second.outcome, calls) == (Outcome.PROCESSED, Outcome.DUPLICATE, [message.id])
	record = store.get(message.id, Direction.INCOMING, "q")
	assert record is not None and record.status is Status.PROCESSED
	[third] = processor.process([Delivery("q", "order.created", encode(message))])
	assert third.outcome is Outcome.DUPLICATE and calls == [message.id]


def test_an_id_longer_than_an_amqp_short_string_is_still_dead_lettered(
	connection: BrokerConnection, registry: HandlerRegistry, unique_name: str, raw_channel
) -> None:
	queue, exchange = f"{unique_name}.orders", f"{unique_name}.ex"

	def refuses(message: Message) -> None:
		raise PermanentFailure("never")

	registry.subscribe("order.*", queue=queue, exchange=exchange)(refuses)
	store = MemoryStore()  # holds any id, unlike the broker's message-id property (255 bytes)
	worker = Worker(connection, registry, store, options=WorkerOptions(poll_seconds=0.1))
	worker.declare()
	message = Message("order.created", {}, id="é" * 200)
	raw_channel.basic_publish(
		exchange, "order.created", encode(message), pika.BasicProperties(content_type="application/json")
	)

	stats = worker.run(until=lambda s: s.handled >= 1, idle_timeout=10)

	assert stats.dead == 1
	_method, properties, body = raw_channel.basic_get(f"{queue}.dead", auto_ack=True)
	assert body == encode(message) and properties.message_id.startswith("sha1-")
	record = store.get(message.id, Direction.INCOMING, queue)
	assert record is not None and record.status is Status.DEAD
