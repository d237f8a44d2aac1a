"""Raw pika doing the same work without our safety: the baselines every ratio is taken against."""

from __future__ import annotations

import time

import pika

from frappe_eda.messaging.envelope import Message, encode


def bodies(count: int) -> list[bytes]:
	return [encode(Message("bench.item", {"n": n, "text": "x" * 100})) for n in range(count)]


def declare_queue(channel, exchange: str, queue: str) -> None:
	channel.exchange_declare(exchange, "topic", durable=True)
	channel.queue_declare(queue, durable=True)
	channel.queue_bind(queue, exchange, "bench.#")


def raw_publish(url: str, exchange: str, payloads: list[bytes], confirm_each: bool) -> float:
	"""Seconds to publish ``payloads`` persistently; with ``confirm_each`` waiting for every confirm."""
	connection = pika.BlockingConnection(pika.URLParameters(url))
	channel = connection.channel()
	if confirm_each:
		channel.confirm_delivery()
	properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
	started = time.perf_counter()
	for body in payloads:
		channel.basic_publish(exchange, "bench.item", body, properties)
	if not confirm_each:
		connection.process_data_events(0)
	elapsed = time.perf_counter() - started
	connection.close()
	return elapsed


def raw_consume(url: str, queue: str, count: int, prefetch: int) -> float:
	"""Seconds to consume and ack ``count`` messages one by one, as hand-written pika code does."""
	connection = pika.BlockingConnection(pika.URLParameters(url))
	channel = connection.channel()
	channel.basic_qos(prefetch_count=prefetch)
	seen = 0
	started = time.perf_counter()
	for method, _properties, _body in channel.consume(queue, inactivity_timeout=10):
		if method is None:
			break
		channel.basic_ack(method.delivery_tag)
		seen += 1
		if seen >= count:
			break
	elapsed = time.perf_counter() - started
	channel.cancel()
	connection.close()
	return elapsed
