"""@subscribe only records what a handler wants; a queue has exactly one handler."""

from __future__ import annotations

import functools

import pytest

from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import ConfigurationError, DuplicateSubscription
from frappe_eda.messaging.registry import HandlerRegistry, Subscription


def reserve(message: Message) -> None:
	return None


def release(message: Message) -> None:
	return None


def test_the_decorator_registers_and_returns_the_function_unchanged() -> None:
	registry = HandlerRegistry()

	@registry.subscribe(
		["sales_order.*", "pos_invoice.#"], queue="inventory", exchange="erp", queue_type="quorum"
	)
	def handle(message: Message) -> str:
		return "done"

	assert handle(Message("x")) == "done"
	assert len(registry) == 1
	subscription = registry.for_queue("inventory")
	assert subscription == Subscription(
		queue="inventory",
		patterns=("sales_order.*", "pos_invoice.#"),
		exchange="erp",
		handler=handle,
		name=f"{__name__}.test_the_decorator_registers_and_returns_the_function_unchanged.<locals>.handle",
		exchange_type="topic",
		retry=None,
		queue_type="quorum",
	)
	assert list(registry) == [subscription]


def test_a_single_pattern_is_one_pattern_not_its_characters() -> None:
	registry = HandlerRegistry()
	registry.subscribe("order.created", queue="q")(reserve)
	assert registry.for_queue("q").patterns == ("order.created",)


def test_a_second_handler_for_a_queue_raises_duplicate_subscription() -> None:
	registry = HandlerRegistry()
	registry.subscribe("a.*", queue="q")(reserve)
	with pytest.raises(DuplicateSubscription, match=f"queue 'q' already has handler {__name__}.reserve"):
		registry.subscribe("b.*", queue="q")(release)
	assert registry.for_queue("q").handler is reserve
	assert issubclass(DuplicateSubscription, ConfigurationError)


def test_registering_the_same_handler_again_keeps_the_newest_function() -> None:
	"""A module imported twice (autoreload, tests) registers its handlers again; that is not a conflict."""
	registry = HandlerRegistry()
	registry.subscribe("a.*", queue="q")(reserve)
	registry.subscribe("a.#", queue="q")(reserve)
	assert len(registry) == 1 and registry.for_queue("q").patterns == ("a.#",)


def test_callable_objects_and_partials_can_be_handlers() -> None:
	class Reserver:
		def __call__(self, message: Message) -> None:
			return None

	registry = HandlerRegistry()
	registry.subscribe("a.*", queue="object")(Reserver())
	registry.subscribe("a.*", queue="partial")(functools.partial(reserve))
	assert registry.for_queue("object").name.endswith("Reserver")
	assert registry.for_queue("partial").name.endswith("partial")
	with pytest.raises(DuplicateSubscription):
		registry.subscribe("a.*", queue="object")(reserve)


@pytest.mark.parametrize(
	("kwargs", "text"),
	[
		({"queue": "q", "exchange_type": "x-delayed"}, "exchange_type 'x-delayed'"),
		({"queue": "q", "queue_type": "stream"}, "queue_type 'stream'"),
		({"queue": ""}, "needs a queue name"),
	],
)
def test_impossible_subscriptions_fail_at_registration(kwargs: dict, text: str) -> None:
	with pytest.raises(ConfigurationError, match=text):
		HandlerRegistry().subscribe("a", **kwargs)


def test_topic_subscriptions_accept_keys_their_patterns_match() -> None:
	registry = HandlerRegistry()
	registry.subscribe(["a.*", "b.#"], queue="q")(reserve)
	accepts = registry.for_queue("q").accepts
	assert [key for key in ("a.x", "a", "a.x.y", "b", "b.c.d", "c.a.x") if accepts(key)] == [
		"a.x",
		"b",
		"b.c.d",
	]


def test_direct_subscriptions_accept_only_their_exact_keys() -> None:
	registry = HandlerRegistry()
	registry.subscribe(["order.*", "order.paid"], queue="q", exchange_type="direct")(reserve)
	accepts = registry.for_queue("q").accepts
	assert [key for key in ("order.*", "order.paid", "order.created", "order") if accepts(key)] == [
		"order.*",
		"order.paid",
	]


@pytest.mark.parametrize("exchange_type", ["fanout", "headers"])
def test_fanout_and_headers_subscriptions_accept_any_key(exchange_type: str) -> None:
	registry = HandlerRegistry()
	registry.subscribe("ignored", queue="q", exchange_type=exchange_type)(reserve)
	assert all(registry.for_queue("q").accepts(key) for key in ("", "anything", "a.b.c"))


def test_select_returns_the_queues_asked_for_in_that_order() -> None:
	registry = HandlerRegistry()
	registry.subscribe("a", queue="one")(reserve)
	registry.subscribe("b", queue="two")(release)
	assert [s.queue for s in registry.select(["two", "one"])] == ["two", "one"]
	assert [s.queue for s in registry.select(None)] == ["one", "two"]


def test_select_of_an_unknown_queue_names_the_known_ones() -> None:
	registry = HandlerRegistry()
	registry.subscribe("a", queue="one")(reserve)
	with pytest.raises(
		ConfigurationError, match=r"no handler is registered for queue 'nope'; known: \['one'\]"
	):
		registry.select(["one", "nope"])


def test_remove_forgets_a_queue() -> None:
	registry = HandlerRegistry()
	registry.subscribe("a", queue="q")(reserve)
	registry.remove("q")
	registry.remove("never-there")
	assert registry.for_queue("q") is None and len(registry) == 0
	registry.subscribe("a", queue="q")(release)  # free again
