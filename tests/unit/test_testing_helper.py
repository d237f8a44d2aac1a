from __future__ import annotations

import pytest

from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import PermanentFailure, UnroutableMessage
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.schema import SchemaRegistry
from frappe_eda.testing import Outcome, TestBroker


@pytest.fixture
def registry() -> HandlerRegistry:
	return HandlerRegistry()


def test_handler_runs_for_a_matching_wildcard_key(registry: HandlerRegistry) -> None:
	seen: list[Message] = []
	registry.subscribe("sales_order.*", queue="inventory")(seen.append)
	registry.subscribe("purchase_order.#", queue="buying")(seen.append)

	[result] = TestBroker(registry).publish("sales_order.submitted", {"name": "SO-1"})

	assert result.outcome is Outcome.PROCESSED and result.queue == "inventory"
	assert [m.payload for m in seen] == [{"name": "SO-1"}]


def test_fanout_to_every_matching_queue(registry: HandlerRegistry) -> None:
	registry.subscribe("#", queue="audit")(lambda m: None)
	registry.subscribe("sales_order.*", queue="inventory")(lambda m: None)
	results = TestBroker(registry).publish("sales_order.submitted", {})
	assert sorted(r.queue for r in results) == ["audit", "inventory"]


def test_retries_then_succeeds_reporting_the_delays_production_waits(registry: HandlerRegistry) -> None:
	calls: list[int] = []

	def flaky(message: Message) -> None:
		calls.append(1)
		if len(calls) < 3:
			raise ConnectionError("warehouse busy")

	registry.subscribe("order.*", queue="q", max_attempts=5, retry_delays=(1, 5, 30))(flaky)
	[result] = TestBroker(registry).publish("order.created", {})
	assert (result.outcome, result.attempts, result.waited) == (Outcome.PROCESSED, 3, [1, 5])
	assert [e.attempt for e in result.errors] == [1, 2]


def test_dead_after_max_attempts(registry: HandlerRegistry) -> None:
	registry.subscribe("order.*", queue="q", max_attempts=3, retry_delays=(2,))(lambda m: 1 / 0)
	broker = TestBroker(registry)
	[result] = broker.publish("order.created", {})
	assert (result.outcome, result.attempts, result.waited) == (Outcome.DEAD, 3, [2, 2])
	assert result.errors[-1].exception_type == "ZeroDivisionError"
	assert broker.dead_letters("q") == [result]


def test_permanent_failure_is_dead_at_once(registry: HandlerRegistry) -> None:
	def refuse(message: Message) -> None:
		raise PermanentFailure("blocked customer")

	registry.subscribe("order.*", queue="q", max_attempts=5)(refuse)
	[result] = TestBroker(registry).publish("order.created", {})
	assert (result.outcome, result.attempts, result.waited) == (Outcome.DEAD, 1, [])


def test_schema_violation_is_dead_at_once_with_the_path(registry: HandlerRegistry) -> None:
	registry.subscribe("order.*", queue="q")(lambda m: None)
	schemas = SchemaRegistry(
		{"order.created": {"properties": {"items": {"items": {"properties": {"qty": {"minimum": 0}}}}}}}
	)
	[result] = TestBroker(registry, schemas=schemas).publish(
		"order.created", {"items": [{"qty": 1}, {"qty": -2}]}
	)
	assert result.outcome is Outcome.DEAD
	assert "items[1].qty: -2 is less than the minimum of 0" in result.errors[0].error


def test_redelivered_message_runs_the_handler_once(registry: HandlerRegistry) -> None:
	calls: list[str] = []
	registry.subscribe("order.*", queue="q")(lambda m: calls.append(m.id))
	broker = TestBroker(registry)
	[first] = broker.publish("order.created", {})
	again = broker.redeliver(first)
	assert again.outcome is Outcome.DUPLICATE and len(calls) == 1


def test_malformed_body_is_dead_with_its_specific_error(registry: HandlerRegistry) -> None:
	registry.subscribe("order.*", queue="q")(lambda m: None)
	result = TestBroker(registry).deliver_raw("q", b"{oops", routing_key="order.created")
	assert result.outcome is Outcome.DEAD
	assert result.errors[0].exception_type == "frappe_eda.messaging.errors.InvalidJson"


def test_unroutable_publish_raises_like_the_real_publisher(registry: HandlerRegistry) -> None:
	registry.subscribe("order.*", queue="q")(lambda m: None)
	with pytest.raises(UnroutableMessage):
		TestBroker(registry).publish("invoice.created", {})
