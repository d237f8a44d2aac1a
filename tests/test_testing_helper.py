"""TestBroker: users' handler tests see the decisions the production worker would take."""

from __future__ import annotations

import pytest

from frappe_eda.messaging.context import current_context
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import (
	ConfigurationError,
	ExchangeNotFound,
	InvalidJson,
	PermanentFailure,
	TopologyMismatch,
	UnknownMessageType,
	UnroutableMessage,
)
from frappe_eda.messaging.processing import ATTEMPT, ORIGINAL_ROUTING_KEY
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.store import Direction, Status
from frappe_eda.stores.memory import MemoryStore
from frappe_eda.testing import Outcome, TestBroker, handler_hook


@pytest.fixture
def registry() -> HandlerRegistry:
	return HandlerRegistry()


class Flaky:
	"""A handler that fails ``failures`` times, then succeeds; remembers what it was called with."""

	def __init__(self, failures: int = 0) -> None:
		self.failures = failures
		self.calls: list[Message] = []
		self.keys: list[str] = []

	def __call__(self, message: Message) -> None:
		self.calls.append(message)
		self.keys.append(current_context().routing_key)
		if len(self.calls) <= self.failures:
			raise ConnectionError(f"warehouse busy ({len(self.calls)})")


def test_handler_runs_with_the_decoded_message(registry: HandlerRegistry) -> None:
	handler = Flaky()
	registry.subscribe("sales_order.submitted", queue="inventory")(handler)
	broker = TestBroker(registry)

	[result] = broker.publish("sales_order.submitted", {"name": "SO-1", "total": 12.5})

	assert (result.outcome, result.queue, result.attempts, result.waited) == (
		Outcome.PROCESSED,
		"inventory",
		1,
		[],
	)
	assert result.handler.endswith("Flaky") and result.errors == [] and result.error is None
	assert [m.payload for m in handler.calls] == [{"name": "SO-1", "total": 12.5}]
	assert result.message == handler.calls[0]
	assert broker.processed("inventory") == [result] and broker.dead_letters() == []
	stored = broker.store.get(result.message.id, Direction.INCOMING, "inventory")
	assert stored is not None and stored.status is Status.PROCESSED


def test_wildcard_routing_reaches_every_matching_queue_and_no_other(registry: HandlerRegistry) -> None:
	for queue, pattern in [
		("audit", "#"),
		("inventory", "sales_order.*"),
		("deep", "sales_order.#.line"),
		("orders_only", "sales_order"),
		("buying", "purchase_order.#"),
	]:
		registry.subscribe(pattern, queue=queue)(lambda m: None)
	broker = TestBroker(registry)

	assert sorted(r.queue for r in broker.publish("sales_order.submitted")) == ["audit", "inventory"]
	assert sorted(r.queue for r in broker.publish("sales_order.x.y.line")) == ["audit", "deep"]
	assert sorted(r.queue for r in broker.publish("sales_order.line")) == ["audit", "deep", "inventory"]
	assert sorted(r.queue for r in broker.publish("sales_order")) == ["audit", "orders_only"]


def test_retry_then_success_lists_the_delays_production_would_wait(registry: HandlerRegistry) -> None:
	handler = Flaky(failures=3)
	registry.subscribe("order.*", queue="q", max_attempts=5, retry_delays=(1, 5, 30, 120))(handler)

	[result] = TestBroker(registry).publish("order.created", {"n": 1})

	assert (result.outcome, result.attempts, result.waited) == (Outcome.PROCESSED, 4, [1, 5, 30])
	assert [(e.attempt, e.exception_type) for e in result.errors] == [
		(n, "ConnectionError") for n in (1, 2, 3)
	]
	assert len({m.id for m in handler.calls}) == 1
	# Retries come back through the default exchange keyed by the queue; the handler still sees the real key.
	assert handler.keys == ["order.created"] * 4


def test_retry_uses_the_brokers_default_policy_when_the_queue_has_none(registry: HandlerRegistry) -> None:
	registry.subscribe("order.*", queue="q")(Flaky(failures=2))
	[result] = TestBroker(registry, retry=RetryPolicy(max_attempts=3, delays=(7,))).publish("order.created")
	assert (result.outcome, result.waited) == (Outcome.PROCESSED, [7, 7])


def test_dead_after_max_attempts(registry: HandlerRegistry) -> None:
	registry.subscribe("order.*", queue="q", max_attempts=3, retry_delays=(2, 10))(lambda m: 1 / 0)
	broker = TestBroker(registry)

	[result] = broker.publish("order.created", {})

	assert (result.outcome, result.attempts, result.waited) == (Outcome.DEAD, 3, [2, 10])
	assert [e.attempt for e in result.errors] == [1, 2, 3]
	assert result.error is not None and result.error.exception_type == "ZeroDivisionError"
	assert broker.dead_letters("q") == [result] and broker.dead_letters("other") == []
	stored = broker.store.get(result.message.id, Direction.INCOMING, "q")
	assert stored is not None and (stored.status, stored.attempts) == (Status.DEAD, 3)


def test_permanent_failure_is_dead_at_once(registry: HandlerRegistry) -> None:
	def refuse(message: Message) -> None:
		raise PermanentFailure("customer is blocked")

	registry.subscribe("order.*", queue="q", max_attempts=5)(refuse)
	[result] = TestBroker(registry).publish("order.created", {})
	assert (result.outcome, result.attempts, result.waited) == (Outcome.DEAD, 1, [])
	assert result.error is not None and result.error.error == "customer is blocked"


def test_schema_violation_is_dead_at_once_with_the_exact_path(registry: HandlerRegistry) -> None:
	handler = Flaky()
	registry.subscribe("order.*", queue="q", max_attempts=5)(handler)
	schema = {"properties": {"items": {"items": {"properties": {"qty": {"minimum": 0}}}}}}
	broker = TestBroker(registry, schemas={"order.created": schema})

	[result] = broker.publish("order.created", {"items": [{"qty": 1}] * 3 + [{"qty": -2}]})

	assert (result.outcome, result.attempts, handler.calls) == (Outcome.DEAD, 1, [])
	assert result.error is not None
	assert result.error.exception_type == "frappe_eda.messaging.errors.SchemaViolation"
	assert result.error.error == (
		"payload of 'order.created' breaks its schema: items[3].qty: -2 is less than the minimum of 0"
	)


def test_duplicate_delivery_runs_the_handler_once(registry: HandlerRegistry) -> None:
	handler = Flaky()
	registry.subscribe("order.*", queue="q")(handler)
	broker = TestBroker(registry)

	[first] = broker.publish("order.created", {})
	again = broker.redeliver(first)

	assert (first.outcome, again.outcome) == (Outcome.PROCESSED, Outcome.DUPLICATE)
	assert len(handler.calls) == 1 and again.delivery.redelivered
	assert again.message is not None and again.message.id == first.message.id


def test_a_dead_message_is_settled_and_not_run_again_when_redelivered(registry: HandlerRegistry) -> None:
	"""Dead is final until a replay reopens it: a handler that committed part of its work before it
	failed must not apply it again because the broker redelivered a copy after a lost ack."""
	handler = Flaky(failures=1)
	registry.subscribe("order.*", queue="q", max_attempts=1)(handler)
	broker = TestBroker(registry)
	[dead] = broker.publish("order.created", {})
	assert dead.outcome is Outcome.DEAD
	assert broker.redeliver(dead).outcome is Outcome.DUPLICATE
	assert len(handler.calls) == 1


def test_malformed_raw_body_is_dead_with_its_specific_error(registry: HandlerRegistry) -> None:
	handler = Flaky()
	registry.subscribe("order.*", queue="q", max_attempts=5)(handler)
	broker = TestBroker(registry)

	result = broker.deliver_raw("q", b'{"id": "m1", "type": ', routing_key="order.created")

	assert (result.outcome, result.attempts, result.message, handler.calls) == (Outcome.DEAD, 1, None, [])
	assert result.error is not None
	assert result.error.exception_type == f"{InvalidJson.__module__}.InvalidJson"
	assert result.error.error == "body is not valid JSON at line 1 column 22: Expecting value"
	assert broker.dead_letters("q") == [result]


@pytest.mark.parametrize("attempt", ["2", 0, 2**31, 10**30])
def test_a_bad_attempt_header_is_bad_input_not_a_first_try(
	registry: HandlerRegistry, attempt: object
) -> None:
	registry.subscribe("order.*", queue="q")(Flaky())
	broker = TestBroker(registry)
	body = b'{"id": "m1", "type": "order.created", "payload": {}}'
	result = broker.deliver_raw("q", body, routing_key="order.created", headers={ATTEMPT: attempt})
	assert result.outcome is Outcome.DEAD
	assert result.error is not None and result.error.exception_type.endswith("InvalidHeader")


def test_a_key_the_queue_did_not_subscribe_to_is_dead(registry: HandlerRegistry) -> None:
	registry.subscribe("order.*", queue="q")(Flaky())
	broker = TestBroker(registry)
	body = b'{"id": "m1", "type": "invoice.paid", "payload": {}}'
	result = broker.deliver_raw("q", body, routing_key="invoice.paid")
	assert result.error is not None and result.error.exception_type.endswith("UnknownMessageType")
	# A replay keeps the real key in a header and passes.
	replay = broker.deliver_raw("q", body, routing_key="q", headers={ORIGINAL_ROUTING_KEY: "order.paid"})
	assert replay.outcome is Outcome.PROCESSED


def test_raw_delivery_to_an_unknown_queue_is_a_test_mistake(registry: HandlerRegistry) -> None:
	registry.subscribe("order.*", queue="q")(Flaky())
	with pytest.raises(ConfigurationError, match="no handler is registered for queue 'nope'"):
		TestBroker(registry).deliver_raw("nope", b"{}", routing_key="order.created")


def test_unroutable_publish_raises_like_the_mandatory_publisher(registry: HandlerRegistry) -> None:
	handler = Flaky()
	registry.subscribe("order.*", queue="q")(handler)
	broker = TestBroker(registry)
	with pytest.raises(UnroutableMessage, match=r"no queue bound to eda\.events with key 'invoice\.created'"):
		broker.publish("invoice.created", {})
	assert (handler.calls, broker.results) == ([], [])


def test_an_exchange_nobody_declared_does_not_exist(registry: HandlerRegistry) -> None:
	registry.subscribe("order.*", queue="q")(Flaky())
	with pytest.raises(ExchangeNotFound, match=r"'erp\.events' does not exist"):
		TestBroker(registry).publish("order.created", exchange="erp.events")
	with pytest.raises(UnroutableMessage):
		TestBroker(registry, exchanges={"erp.events": "topic"}).publish(
			"order.created", exchange="erp.events"
		)


def test_direct_and_fanout_exchanges_route_like_rabbitmq(registry: HandlerRegistry) -> None:
	registry.subscribe("order.*", queue="direct", exchange="cmd", exchange_type="direct")(Flaky())
	registry.subscribe("ignored", queue="fan", exchange="broadcast", exchange_type="fanout")(Flaky())
	broker = TestBroker(registry)
	with pytest.raises(UnroutableMessage):  # no wildcards on a direct exchange
		broker.publish("order.created", exchange="cmd")
	assert [r.queue for r in broker.publish("order.created", exchange="cmd", routing_key="order.*")] == [
		"direct"
	]
	assert [r.queue for r in broker.publish("anything.at.all", exchange="broadcast")] == ["fan"]


def test_two_types_declared_for_one_exchange_fail_like_on_the_broker(registry: HandlerRegistry) -> None:
	registry.subscribe("a", queue="q1", exchange="x", exchange_type="topic")(Flaky())
	registry.subscribe("a", queue="q2", exchange="x", exchange_type="direct")(Flaky())
	with pytest.raises(TopologyMismatch, match="exchange 'x' already exists with type="):
		TestBroker(registry).publish("a", exchange="x")


def test_the_default_exchange_delivers_to_the_queue_named_by_the_key(registry: HandlerRegistry) -> None:
	registry.subscribe("order.*", queue="q")(Flaky())
	[result] = TestBroker(registry).publish(Message("order.created"), exchange="", routing_key="q")
	# The queue did not subscribe to the key "q": production dead-letters it, and so do we.
	assert result.outcome is Outcome.DEAD and result.queue == "q"


def test_handlers_registered_after_the_broker_was_made_are_seen() -> None:
	registry = HandlerRegistry()
	broker = TestBroker(registry)  # an empty registry must not fall back to the default one
	registry.subscribe("order.*", queue="late")(Flaky())
	assert [r.queue for r in broker.publish("order.created")] == ["late"]


def test_reset_forgets_results_and_the_inbox(registry: HandlerRegistry) -> None:
	handler = Flaky()
	registry.subscribe("order.*", queue="q")(handler)
	message = Message("order.created")
	with TestBroker(registry) as broker:
		broker.publish(message)
		assert len(broker.processed()) == 1
	assert broker.results == [] and broker.store.counts() == {}
	assert broker.publish(message)[0].outcome is Outcome.PROCESSED
	assert len(handler.calls) == 2


def test_reset_keeps_a_store_passed_in(registry: HandlerRegistry) -> None:
	registry.subscribe("order.*", queue="q")(Flaky())
	store = MemoryStore()
	broker = TestBroker(registry, store=store)
	message = Message("order.created")
	broker.publish(message)
	broker.reset()
	assert broker.store is store and broker.publish(message)[0].outcome is Outcome.DUPLICATE


def test_handler_hook_calls_the_handler_directly(registry: HandlerRegistry) -> None:
	@registry.subscribe("order.*", queue="q")
	def reserve(message: Message) -> str:
		context = current_context()
		if message.payload.get("qty", 0) < 0:
			raise ValueError("negative quantity")
		return f"{context.queue}:{context.routing_key}:{context.attempt}:{message.payload['qty']}"

	call = handler_hook(registry, "q", attempt=2)
	assert call("order.created", {"qty": 3}) == "q:order.created:2:3"
	with pytest.raises(ValueError, match="negative quantity"):  # exceptions reach the test
		call(Message("order.created", {"qty": -1}))
	with pytest.raises(UnknownMessageType):
		call("invoice.created", {"qty": 1})
	with pytest.raises(ConfigurationError):
		handler_hook(registry, "nope")
