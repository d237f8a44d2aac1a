"""Test your handlers without a broker, through the same decisions the worker takes.

``TestBroker`` encodes a message exactly as the publisher does, routes it as RabbitMQ would (topic
wildcards included; ``tests/test_routing_matches_broker.py`` holds the two to the same answers) and
runs the production ``DeliveryProcessor`` on each delivery: decoding, inbox, schema validation, the
handler, retry and dead-letter decisions. A retry is delivered again at once, shaped as the worker's
delay queue would hand it back; the delays production would wait are reported instead::

    from frappe_eda.testing import Outcome, TestBroker


    def test_reserves_stock():
        with TestBroker() as broker:
            [result] = broker.publish("sales_order.submitted", {"name": "SO-1", "items": []})
            assert result.outcome is Outcome.PROCESSED

``schemas`` are the consumer's: a payload that breaks them is dead-lettered, as in production.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from frappe_eda.messaging.context import HandlerContext, handler_context
from frappe_eda.messaging.envelope import CONTENT_TYPE, Message, encode
from frappe_eda.messaging.errors import (
	ExchangeNotFound,
	TopologyMismatch,
	UnknownMessageType,
	UnroutableMessage,
)
from frappe_eda.messaging.processing import (
	ATTEMPT,
	ORIGINAL_EXCHANGE,
	ORIGINAL_ROUTING_KEY,
	Decision,
	Delivery,
	DeliveryProcessor,
	Outcome,
)
from frappe_eda.messaging.publisher import DEFAULT_EXCHANGE
from frappe_eda.messaging.registry import HandlerRegistry, Subscription, default_registry
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.routing import headers_match, route_matches
from frappe_eda.messaging.schema import SchemaRegistry
from frappe_eda.messaging.store import ErrorRecord, MessageStore
from frappe_eda.stores.memory import MemoryStore

__all__ = ["DeliveryResult", "Outcome", "TestBroker", "handler_hook"]

Schemas = SchemaRegistry | Mapping[str, Mapping[str, Any]]


@dataclass
class DeliveryResult:
	"""What happened to one message in one queue, after all its (immediate) retries."""

	queue: str
	routing_key: str
	handler: str
	outcome: Outcome
	attempts: int
	message: Message | None
	delivery: Delivery
	waited: list[float] = field(default_factory=list)
	errors: list[ErrorRecord] = field(default_factory=list)

	@property
	def error(self) -> ErrorRecord | None:
		"""The error of the last attempt, if it failed."""
		return self.errors[-1] if self.errors and self.outcome is not Outcome.PROCESSED else None


class TestBroker:
	"""An in-memory stand-in for RabbitMQ plus the worker, for users' unit tests.

	``exchanges`` declares exchange types (name -> "topic" | "direct" | "fanout" | "headers") beyond
	those the registry's subscriptions declare; publishing to an exchange nobody declared raises
	``ExchangeNotFound`` like the real publisher, except ``eda.events``, taken as a topic exchange.
	"""

	__test__ = False  # not a pytest test class despite its name

	def __init__(
		self,
		registry: HandlerRegistry | None = None,
		*,
		schemas: Schemas | None = None,
		retry: RetryPolicy | None = None,
		store: MessageStore | None = None,
		exchanges: Mapping[str, str] | None = None,
	) -> None:
		self.registry = default_registry if registry is None else registry
		self.schemas = schemas if isinstance(schemas, SchemaRegistry) else SchemaRegistry(schemas)
		self.retry = retry
		self.exchanges = dict(exchanges or {})
		self._owns_store = store is None
		self.store: MessageStore = MemoryStore() if store is None else store
		self.processor = DeliveryProcessor(self.registry, self.store, retry, self.schemas)
		self.results: list[DeliveryResult] = []

	def __enter__(self) -> TestBroker:
		return self

	def __exit__(self, *exc_info: object) -> None:
		self.reset()

	def reset(self) -> None:
		"""Forget every result; a store the broker made itself starts empty again (one passed in is kept)."""
		self.results.clear()
		if self._owns_store:
			self.store = MemoryStore()
			self.processor = DeliveryProcessor(self.registry, self.store, self.retry, self.schemas)

	def publish(
		self,
		message: Message | str,
		payload: Any = None,
		*,
		exchange: str = DEFAULT_EXCHANGE,
		routing_key: str | None = None,
		headers: Mapping[str, Any] | None = None,
		sender: str | None = None,
	) -> list[DeliveryResult]:
		"""Route and deliver like the real publisher + worker; raises ``UnroutableMessage`` like them.

		``headers`` are AMQP headers (a headers exchange routes on them), not the message's own.
		``sender`` is the broker user the message comes from (its validated ``user_id``), for handlers
		registered with ``senders=``.
		"""
		if isinstance(message, str):
			message = Message(type=message, payload={} if payload is None else payload)
		key = routing_key or message.type  # as Publisher.publish_many
		targets = self.route(exchange, key, headers, message_id=message.id)
		if not targets:
			raise UnroutableMessage(message.id, exchange, key)
		body = encode(message)
		amqp_headers = dict(headers or {})
		return [
			self._deliver(Delivery(s.queue, key, body, exchange, CONTENT_TYPE, amqp_headers, user_id=sender))
			for s in targets
		]

	def deliver_raw(
		self,
		queue: str,
		body: bytes,
		*,
		routing_key: str,
		content_type: str | None = CONTENT_TYPE,
		headers: Mapping[str, Any] | None = None,
		exchange: str = DEFAULT_EXCHANGE,
		sender: str | None = None,
	) -> DeliveryResult:
		"""Hand ``body`` to ``queue``'s handler as the broker would, bad bytes included."""
		self.registry.select([queue])  # an unknown queue is a mistake in the test: say so
		delivery = Delivery(
			queue, routing_key, body, exchange, content_type, dict(headers or {}), user_id=sender
		)
		return self._deliver(delivery)

	def redeliver(self, result: DeliveryResult) -> DeliveryResult:
		"""Deliver the same bytes to the same queue again, as the broker does after a lost ack."""
		return self._deliver(replace(result.delivery, redelivered=True))

	def dead_letters(self, queue: str | None = None) -> list[DeliveryResult]:
		"""Results that ended in a dead-letter queue (every queue's, or ``queue``'s), oldest first."""
		return [r for r in self.results if r.outcome is Outcome.DEAD and queue in (None, r.queue)]

	def processed(self, queue: str | None = None) -> list[DeliveryResult]:
		return [r for r in self.results if r.outcome is Outcome.PROCESSED and queue in (None, r.queue)]

	def route(
		self,
		exchange: str,
		routing_key: str,
		headers: Mapping[str, Any] | None = None,
		*,
		message_id: str = "",
	) -> list[Subscription]:
		"""The subscriptions whose queues RabbitMQ would put this message in (nothing is delivered).

		An exchange nobody declared raises ``ExchangeNotFound``, two types declared for one exchange
		``TopologyMismatch``, as on the broker.
		"""
		if exchange == "":  # the default exchange: straight to the queue named by the key
			return [s for s in self.registry if s.queue == routing_key]
		types = [self.exchanges[exchange]] if exchange in self.exchanges else []
		types += sorted({s.exchange_type for s in self.registry if s.exchange == exchange} - set(types))
		if len(types) > 1:
			raise TopologyMismatch("exchange", exchange, "type", types[1], types[0])
		if not types and exchange != DEFAULT_EXCHANGE:
			raise ExchangeNotFound(message_id, exchange, routing_key)
		return [s for s in self.registry if self._routes(s, exchange, routing_key, headers or {})]

	def _routes(
		self, subscription: Subscription, exchange: str, key: str, headers: Mapping[str, Any]
	) -> bool:
		if subscription.exchange != exchange:
			return False
		if subscription.exchange_type in ("fanout", "headers"):  # bound once, without arguments (topology)
			return subscription.exchange_type == "fanout" or headers_match({}, headers)
		return any(route_matches(subscription.exchange_type, p, key) for p in subscription.patterns)

	def _deliver(self, delivery: Delivery) -> DeliveryResult:
		first, waited, errors = delivery, [], []
		while True:
			[decision] = self.processor.process([delivery])
			if decision.error is not None:
				errors.append(decision.error)
			if decision.outcome is not Outcome.RETRY:
				break
			assert decision.retry_delay is not None
			waited.append(decision.retry_delay)
			delivery = _back_from_delay_queue(decision)
		result = DeliveryResult(
			queue=first.queue,
			routing_key=first.routing_key,
			handler=decision.handler,
			outcome=decision.outcome,
			attempts=decision.attempt,
			message=decision.message,
			delivery=first,
			waited=waited,
			errors=errors,
		)
		self.results.append(result)
		return result


def _back_from_delay_queue(decision: Decision) -> Delivery:
	"""A retry as the worker republishes it (``Worker._follow_up``) and the delay queue dead-letters it
	back: through the default exchange, keyed by the queue name, the real key in the headers."""
	delivery = decision.delivery
	headers = {
		**delivery.headers,
		ORIGINAL_ROUTING_KEY: delivery.original_routing_key,
		ORIGINAL_EXCHANGE: delivery.original_exchange,
		ATTEMPT: decision.attempt + 1,
	}
	return replace(delivery, routing_key=delivery.queue, exchange="", headers=headers, redelivered=False)


def handler_hook(
	registry: HandlerRegistry | None,
	queue: str,
	*,
	store: MessageStore | None = None,
	attempt: int = 1,
) -> Callable[..., Any]:
	"""Call ``queue``'s handler directly, like nameko's ``entrypoint_hook``: no envelope, inbox, schema or
	retry, and the handler's exceptions reach the test. ``current_context()`` works inside it::

	    call = handler_hook(registry, "inventory")
	    assert call("sales_order.submitted", {"name": "SO-1"}) == "reserved"
	"""
	[subscription] = (default_registry if registry is None else registry).select([queue])
	context_store = MemoryStore() if store is None else store

	def call(message: Message | str, payload: Any = None, *, routing_key: str | None = None) -> Any:
		if isinstance(message, str):
			message = Message(type=message, payload={} if payload is None else payload)
		key = routing_key or message.type
		if not subscription.accepts(key):
			raise UnknownMessageType(key, queue)
		with handler_context(HandlerContext(queue, key, attempt, False, context_store)):
			return subscription.handler(message)

	return call
