"""Exchanges, queues and bindings as values, and declaring them on the broker.

Each consumer queue ``Q`` comes with:
- ``Q.retry.<delay>``: one delay queue per retry tier; a message waits there ``x-message-ttl`` and is
  dead-lettered by the broker back into ``Q`` through the default exchange (so other queues bound to
  the same routing key never see the retry). Delays live on the broker, not in worker memory.
- ``Q.dead``: the dead-letter queue. ``Q`` itself dead-letters there too, so a message rejected by the
  broker (a quorum queue's ``x-delivery-limit``, a crash loop) is parked, never dropped.

Declaring is idempotent. A queue that exists with other arguments makes RabbitMQ close the channel
with a bare PRECONDITION_FAILED; we turn that into ``TopologyMismatch`` naming the argument (switching
``single_active_consumer`` or the queue type on an existing queue is one: RabbitMQ cannot change
either in place, so the queue is drained and deleted, then declared again).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pika.exceptions

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.errors import ConfigurationError, TopologyMismatch
from frappe_eda.messaging.registry import Subscription
from frappe_eda.messaging.retry import RetryPolicy, tier_name

DEFAULT_DELIVERY_LIMIT = 20


@dataclass(frozen=True)
class Exchange:
	name: str
	type: str = "topic"
	durable: bool = True


@dataclass(frozen=True)
class Queue:
	name: str
	queue_type: str = "classic"
	arguments: Mapping[str, Any] = field(default_factory=dict)

	def declare_arguments(self) -> dict[str, Any]:
		arguments = dict(self.arguments)
		if self.queue_type == "quorum":
			arguments["x-queue-type"] = "quorum"
		return arguments


@dataclass(frozen=True)
class Binding:
	exchange: str
	queue: str
	routing_key: str = ""
	arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Topology:
	exchanges: tuple[Exchange, ...] = ()
	queues: tuple[Queue, ...] = ()
	bindings: tuple[Binding, ...] = ()

	def __add__(self, other: Topology) -> Topology:
		return Topology(
			_unique(self.exchanges + other.exchanges),
			_unique(self.queues + other.queues),
			_unique(self.bindings + other.bindings),
		)


def _unique(items: tuple[Any, ...]) -> tuple[Any, ...]:
	seen: list[Any] = []
	for item in items:
		if item not in seen:
			seen.append(item)
	return tuple(seen)


def dead_letter_queue(queue: str) -> str:
	return f"{queue}.dead"


def retry_queue(queue: str, delay_seconds: float) -> str:
	return f"{queue}.retry.{tier_name(delay_seconds)}"


def consumer_topology(
	subscription: Subscription,
	default_retry: RetryPolicy,
	default_queue_type: str = "classic",
	delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> Topology:
	"""Everything one subscription needs: its exchange, work queue, bindings, delay and dead queues."""
	queue_type = subscription.queue_type or default_queue_type
	policy = subscription.retry_policy(default_retry)
	name = subscription.queue
	work_arguments: dict[str, Any] = {
		"x-dead-letter-exchange": "",
		"x-dead-letter-routing-key": dead_letter_queue(name),
	}
	if queue_type == "quorum":
		# Without an explicit limit and target a quorum queue drops messages that crash consumers.
		work_arguments["x-delivery-limit"] = delivery_limit
	if subscription.single_active_consumer:
		work_arguments["x-single-active-consumer"] = True
	queues = [Queue(name, queue_type, work_arguments), Queue(dead_letter_queue(name), queue_type)]
	for delay in policy.tiers():
		queues.append(
			Queue(
				retry_queue(name, delay),
				queue_type,
				{
					"x-message-ttl": round(delay * 1000),
					"x-dead-letter-exchange": "",
					"x-dead-letter-routing-key": name,
				},
			)
		)
	exchange = Exchange(subscription.exchange, subscription.exchange_type)
	if subscription.exchange_type in ("fanout", "headers"):
		bindings = [Binding(exchange.name, name)]
	else:
		bindings = [Binding(exchange.name, name, pattern) for pattern in subscription.patterns]
	return Topology((exchange,), tuple(queues), tuple(bindings))


def topology_for(
	subscriptions: Iterable[Subscription],
	default_retry: RetryPolicy,
	default_queue_type: str = "classic",
	delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> Topology:
	total = Topology()
	for subscription in subscriptions:
		total = total + consumer_topology(subscription, default_retry, default_queue_type, delivery_limit)
	return total


_INEQUIVALENT = re.compile(
	r"inequivalent arg '(?P<arg>[^']+)' for (?P<kind>queue|exchange) '(?P<name>[^']+)' in vhost "
	r"'(?P<vhost>[^']*)': received (?P<declared>.+?) but current is (?P<existing>.+)$"
)


class TopologyDeclarer:
	"""Declares topology on its own channel; the channel is replaced after a broker-side close."""

	def __init__(self, connection: BrokerConnection) -> None:
		self.connection = connection
		self._channel: Any = None

	def declare(self, topology: Topology) -> None:
		for exchange in topology.exchanges:
			if exchange.type not in ("topic", "direct", "fanout", "headers"):
				raise ConfigurationError(f"exchange {exchange.name!r} has unknown type {exchange.type!r}")
			if exchange.name == "":
				continue  # the default exchange always exists
			self._declare_exchange(exchange)
		for queue in topology.queues:
			self._run(
				lambda ch, q=queue: ch.queue_declare(q.name, durable=True, arguments=q.declare_arguments()),
			)
		for binding in topology.bindings:
			self._run(
				lambda ch, b=binding: ch.queue_bind(
					b.queue, b.exchange, routing_key=b.routing_key, arguments=dict(b.arguments) or None
				),
			)

	def _declare_exchange(self, exchange: Exchange) -> None:
		"""Declare ``exchange``; a broker user without configure permission on it (a least-privilege
		server user: the administrator declares the shared exchanges) only checks that it exists."""
		try:
			self._run(lambda ch: ch.exchange_declare(exchange.name, exchange.type, durable=exchange.durable))
		except pika.exceptions.ChannelClosedByBroker as e:
			if e.reply_code != 403:
				raise
			try:
				self._run(lambda ch: ch.exchange_declare(exchange.name, passive=True))
			except pika.exceptions.ChannelClosedByBroker as missing:
				if missing.reply_code != 404:
					raise
				raise ConfigurationError(
					f"exchange {exchange.name!r} does not exist and this broker user may not create it: "
					"declare it as the administrator (frappe-eda broker-user does)"
				) from None

	def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
		"""Remove one binding (a binding that does not exist is no error)."""
		self._run(lambda ch: ch.queue_unbind(queue, exchange, routing_key=routing_key))

	def delete_if_idle(self, queue: str) -> None:
		"""Delete ``queue`` only when it is empty and nobody consumes it: the broker refuses otherwise
		(``ChannelClosedByBroker`` 406), so nothing is ever dropped. A missing queue raises 404."""
		self._run(lambda ch: ch.queue_delete(queue, if_unused=True, if_empty=True))

	def queue_depth(self, queue: str) -> int | None:
		"""Messages ready in ``queue``, or None when it does not exist (a passive declare)."""
		frame = self._passive(queue)
		return None if frame is None else int(frame.method.message_count)

	def consumer_count(self, queue: str) -> int | None:
		"""Consumers of ``queue`` (a worker consumes only once its bindings exist), None if missing."""
		frame = self._passive(queue)
		return None if frame is None else int(frame.method.consumer_count)

	def _passive(self, queue: str) -> Any:
		try:
			return self._run(lambda ch: ch.queue_declare(queue, passive=True))
		except pika.exceptions.ChannelClosedByBroker as e:
			if e.reply_code == 404:
				return None
			raise

	def delete(self, topology: Topology) -> None:
		"""Remove queues and exchanges (tests and ``declare --reset``); missing ones are fine."""
		for queue in topology.queues:
			self._run(lambda ch, q=queue: ch.queue_delete(q.name))
		for exchange in topology.exchanges:
			if exchange.name:
				self._run(lambda ch, e=exchange: ch.exchange_delete(e.name))

	def close(self) -> None:
		if self._channel is not None and self._channel.is_open:
			self._channel.close()
		self._channel = None

	def _run(self, operation: Any) -> Any:
		if self._channel is None or not self._channel.is_open:
			self._channel = self.connection.channel()
		try:
			return operation(self._channel)
		except pika.exceptions.ChannelClosedByBroker as e:
			self._channel = None
			mismatch = _INEQUIVALENT.search(e.reply_text or "")
			if e.reply_code == 406 and mismatch:
				raise TopologyMismatch(
					mismatch["kind"],
					mismatch["name"],
					mismatch["arg"],
					_strip_type_tag(mismatch["declared"]),
					_strip_type_tag(mismatch["existing"]),
					mismatch["vhost"],
				) from None
			raise


def _strip_type_tag(text: str) -> str:
	"""RabbitMQ writes values as ``the value '5000' of type 'long'``; keep the value."""
	found = re.search(r"the value '([^']*)'", text)
	if found:
		return found[1]
	text = text.strip().strip("'")
	return "(not set)" if text == "none" else text
