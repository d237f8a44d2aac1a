"""Test your handlers without a broker, through the same decisions the worker takes.

``TestBroker`` encodes the message exactly as the publisher does, routes it to every subscription as
RabbitMQ would (topic wildcards included), and runs the production ``DeliveryProcessor`` on each
delivery: decoding, inbox, schema validation, the handler, retry and dead-letter decisions. Retries
happen at once; the delays production would wait are reported instead::

    from frappe_eda.testing import TestBroker


    def test_reserves_stock():
        broker = TestBroker()
        [result] = broker.publish("sales_order.submitted", {"name": "SO-1", "items": []})
        assert result.outcome is Outcome.PROCESSED
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.errors import UnroutableMessage
from frappe_eda.messaging.processing import ATTEMPT, Decision, Delivery, DeliveryProcessor, Outcome
from frappe_eda.messaging.registry import HandlerRegistry, Subscription, default_registry
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.routing import headers_match, route_matches
from frappe_eda.messaging.schema import SchemaRegistry
from frappe_eda.messaging.store import ErrorRecord, MessageStore
from frappe_eda.stores.memory import MemoryStore

__all__ = ["DeliveryResult", "Outcome", "TestBroker"]


@dataclass
class DeliveryResult:
	"""What happened to one message in one queue, after all its (immediate) retries."""

	queue: str
	routing_key: str
	handler: str
	outcome: Outcome
	attempts: int
	message: Message | None
	waited: list[float] = field(default_factory=list)
	errors: list[ErrorRecord] = field(default_factory=list)


class TestBroker:
	"""An in-memory stand-in for RabbitMQ plus the worker, for users' unit tests."""

	__test__ = False  # not a pytest test class despite its name

	def __init__(
		self,
		registry: HandlerRegistry | None = None,
		*,
		schemas: SchemaRegistry | None = None,
		retry: RetryPolicy | None = None,
		store: MessageStore | None = None,
	) -> None:
		self.registry = registry or default_registry
		self.store = store or MemoryStore()
		self.processor = DeliveryProcessor(self.registry, self.store, retry, schemas)
		self.results: list[DeliveryResult] = []

	def publish(
		self,
		message: Message | str,
		payload: Any = None,
		*,
		exchange: str = "eda.events",
		routing_key: str | None = None,
		headers: Mapping[str, Any] | None = None,
	) -> list[DeliveryResult]:
		"""Route and deliver like the real publisher + worker; raises ``UnroutableMessage`` like them."""
		if isinstance(message, str):
			message = Message(type=message, payload={} if payload is None else payload)
		key = routing_key or message.type
		targets = [s for s in self.registry if self._routes(s, exchange, key, headers or {})]
		if not targets:
			raise UnroutableMessage(message.id, exchange, key)
		body = encode(message)
		return [self.deliver_raw(s.queue, body, routing_key=key, exchange=exchange) for s in targets]

	def deliver_raw(
		self,
		queue: str,
		body: bytes,
		*,
		routing_key: str,
		exchange: str = "eda.events",
		content_type: str | None = "application/json",
		headers: Mapping[str, Any] | None = None,
	) -> DeliveryResult:
		"""Hand ``body`` to ``queue``'s handler as the broker would, bad bytes included."""
		delivery = Delivery(queue, routing_key, body, exchange, content_type, dict(headers or {}))
		waited: list[float] = []
		while True:
			[decision] = self.processor.process([delivery])
			if decision.outcome is not Outcome.RETRY:
				break
			assert decision.retry_delay is not None
			waited.append(decision.retry_delay)
			delivery = Delivery(
				queue,
				routing_key,
				body,
				exchange,
				content_type,
				{**delivery.headers, ATTEMPT: decision.attempt + 1},
				redelivered=False,
			)
		result = self._result(decision, waited)
		self.results.append(result)
		return result

	def redeliver(self, result: DeliveryResult) -> DeliveryResult:
		"""Deliver the same message to the same queue again, as a broker redelivery would."""
		assert result.message is not None, "only a decoded message can be redelivered"
		return self.deliver_raw(result.queue, encode(result.message), routing_key=result.routing_key)

	def dead_letters(self, queue: str | None = None) -> list[DeliveryResult]:
		return [r for r in self.results if r.outcome is Outcome.DEAD and queue in (None, r.queue)]

	def processed(self, queue: str | None = None) -> list[DeliveryResult]:
		return [r for r in self.results if r.outcome is Outcome.PROCESSED and queue in (None, r.queue)]

	def _routes(
		self, subscription: Subscription, exchange: str, key: str, headers: Mapping[str, Any]
	) -> bool:
		if subscription.exchange != exchange:
			return False
		if subscription.exchange_type == "headers":
			return headers_match({}, headers)
		return any(route_matches(subscription.exchange_type, p, key) for p in subscription.patterns)

	def _result(self, decision: Decision, waited: list[float]) -> DeliveryResult:
		queue = decision.delivery.queue
		errors = self.store.errors(
			decision.message_id or (decision.error.message_id if decision.error else ""), queue
		)
		return DeliveryResult(
			queue=queue,
			routing_key=decision.delivery.routing_key,
			handler=decision.handler,
			outcome=decision.outcome,
			attempts=decision.attempt,
			message=decision.message,
			waited=waited,
			errors=errors,
		)
