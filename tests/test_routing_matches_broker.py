"""Our topic matching (the test helper, replay filters) must give RabbitMQ's answer for every key.

One topic exchange, one queue per binding pattern, each routing key published once (with confirms, so
it is routed before we look) carrying its key in a header; then every queue is drained with basic_get.
The broker's answers are compared with ``routing.topic_matches`` and with ``TestBroker`` for the whole
cross product of patterns and keys, and with the expectations written down below.
"""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest

from frappe_eda.messaging.errors import UnroutableMessage
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.routing import topic_matches
from frappe_eda.testing import Outcome, TestBroker

# (binding pattern, routing key, does RabbitMQ route it?)
PAIRS = [
	# "*" is exactly one word, possibly an empty one
	("*", "a", True),
	("*", "", False),
	("*", "a.b", False),
	("*", ".", False),
	("*.*", ".", True),
	("a.*", "a.", True),
	("*.a", ".a", True),
	("a.*.b", "a..b", True),
	("a.*.b", "a.b", False),
	# "#" is zero or more words, at the start, middle or end
	("#", "", True),
	("#", "a.b.c", True),
	("#", "..", True),
	("a.#", "a", True),
	("a.#", "a.b.c", True),
	("a.#", "b.a", False),
	("a.#", "a.", True),
	("#.b", "b", True),
	("#.b", "a.b.b", True),
	("#.b", "b.a", False),
	("#.b", ".b", True),
	("a.#.b", "a.b", True),
	("a.#.b", "a.x.y.b", True),
	("a.#.b", "a..b", True),
	("a.#.b", "a.b.c", False),
	("#.a.#", "a", True),
	("#.a.#", "x.a.y", True),
	("#.a.#", "b", False),
	("#.#", "", True),
	("#.#", "a.b", True),
	("#.*", "", False),
	("#.*", "a.b", True),
	("*.#", "a", True),
	("a.*.#", "a", False),
	("a.*.#", "a.b", True),
	# plain words, the empty key and empty words
	("a", "a", True),
	("a", "a.b", False),
	("a.b", "a.b", True),
	("a.b", "a.b.c", False),
	("", "", True),
	("", "a", False),
	("", ".", False),
	("a..b", "a..b", True),
	("a..b", "a.b", False),
	(".a", ".a", True),
	(".a", "a", False),
	("a.", "a.", True),
	("a.", "a", False),
	("*.*.*", "a.b.c", True),
	("*.*.*", "a.b", False),
]
PATTERNS = sorted({p for p, _, _ in PAIRS})
KEYS = sorted({k for _, k, _ in PAIRS})


@pytest.fixture
def broker_routes(raw_channel, unique_name: str) -> Iterator[tuple[str, dict[str, str], dict[str, set[str]]]]:
	"""(exchange, queue per pattern, keys the broker routed per pattern); everything is deleted after."""
	exchange = f"{unique_name}.topics"
	queues = {pattern: f"{unique_name}.p{index}" for index, pattern in enumerate(PATTERNS)}
	raw_channel.exchange_declare(exchange, "topic")
	try:
		for pattern, queue in queues.items():
			raw_channel.queue_declare(queue, exclusive=True)
			raw_channel.queue_bind(queue, exchange, pattern)
		raw_channel.confirm_delivery()
		for key in KEYS:
			raw_channel.basic_publish(exchange, key, b"", pika.BasicProperties(headers={"key": key}))
		routed: dict[str, set[str]] = {}
		for pattern, queue in queues.items():
			routed[pattern] = set()
			while True:
				method, properties, _body = raw_channel.basic_get(queue, auto_ack=True)
				if method is None:
					break
				routed[pattern].add(properties.headers["key"])
		yield exchange, queues, routed
	finally:
		for queue in queues.values():
			raw_channel.queue_delete(queue)
		raw_channel.exchange_delete(exchange)


def test_the_table_is_what_rabbitmq_does(
	broker_routes: tuple[str, dict[str, str], dict[str, set[str]]],
) -> None:
	_exchange, _queues, routed = broker_routes
	wrong = [(p, k, expected) for p, k, expected in PAIRS if (k in routed[p]) != expected]
	assert wrong == []


def test_topic_matches_agrees_with_rabbitmq_for_every_pattern_and_key(
	broker_routes: tuple[str, dict[str, str], dict[str, set[str]]],
) -> None:
	_exchange, _queues, routed = broker_routes
	disagreements = [
		(pattern, key, key in routed[pattern])
		for pattern in PATTERNS
		for key in KEYS
		if topic_matches(pattern, key) != (key in routed[pattern])
	]
	assert disagreements == []


def test_test_broker_routes_every_key_to_the_queues_rabbitmq_does(
	broker_routes: tuple[str, dict[str, str], dict[str, set[str]]],
) -> None:
	exchange, queues, routed = broker_routes
	registry = HandlerRegistry()
	for pattern, queue in queues.items():
		registry.subscribe(pattern, queue=queue, exchange=exchange)(lambda m: None)
	broker = TestBroker(registry)

	disagreements = []
	for key in KEYS:
		expected = {queues[p] for p in PATTERNS if key in routed[p]}
		via_route = {s.queue for s in broker.route(exchange, key)}
		if key:  # the publisher takes an empty key to mean "the message type", so route() covers ""
			try:
				results = broker.publish("t", {}, exchange=exchange, routing_key=key)
			except UnroutableMessage:
				results = []
			assert all(r.outcome is Outcome.PROCESSED for r in results), key
			via_publish = {r.queue for r in results}
		else:
			via_publish = expected
		if not expected == via_route == via_publish:
			disagreements.append((key, sorted(expected), sorted(via_route), sorted(via_publish)))
	assert disagreements == []
