"""Our topic matching (used by the test helper and replay filters) must agree with RabbitMQ's."""

from __future__ import annotations

import pika

from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.routing import topic_matches
from frappe_eda.testing import TestBroker

PATTERNS = [
	"#",
	"*",
	"a",
	"a.*",
	"a.#",
	"*.b",
	"#.b",
	"a.*.c",
	"a.#.c",
	"#.#",
	"*.*",
	"a.*.#",
	"#.a.#",
	"",
	"a..b",
	"*.*.*",
]
KEYS = [
	"",
	"a",
	"b",
	"a.b",
	"a.c",
	"a.b.c",
	"a.b.b.c",
	"a.c.c",
	"x.a.y",
	"a..b",
	".a",
	"a.",
	"..",
	"b.a",
	"a.b.c.d",
]


def test_topic_matching_agrees_with_rabbitmq_for_every_pair(raw_channel, unique_name: str) -> None:
	exchange = f"{unique_name}.topics"
	raw_channel.exchange_declare(exchange, "topic", auto_delete=True)
	queues = {}
	for index, pattern in enumerate(PATTERNS):
		queue = f"{unique_name}.p{index}"
		raw_channel.queue_declare(queue, exclusive=True)
		raw_channel.queue_bind(queue, exchange, pattern)
		queues[pattern] = queue
	for key in KEYS:
		raw_channel.basic_publish(
			exchange, key, key.encode() or b"(empty)", pika.BasicProperties(headers={"key": key})
		)

	registry = HandlerRegistry()
	for pattern in PATTERNS:
		registry.subscribe(pattern, queue=queues[pattern], exchange=exchange)(lambda m: None)
	helper = TestBroker(registry)

	disagreements = []
	for pattern, queue in queues.items():
		broker_keys = set()
		while True:
			method, properties, _body = raw_channel.basic_get(queue, auto_ack=True)
			if method is None:
				break
			broker_keys.add(properties.headers["key"])
		ours = {key for key in KEYS if topic_matches(pattern, key)}
		via_helper = {
			key
			for key in KEYS
			if queue in {s.queue for s in helper.registry if helper._routes(s, exchange, key, {})}
		}
		if broker_keys != ours or ours != via_helper:
			disagreements.append((pattern, sorted(broker_keys), sorted(ours), sorted(via_helper)))
	assert disagreements == []
	raw_channel.exchange_delete(exchange)
