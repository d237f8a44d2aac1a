"""Handler registration: ``@subscribe`` only records what a handler wants; the worker runs it.

Routing decides which handler runs, never message content: a delivery is dispatched by the queue it
arrived on, and only to the handler registered for that queue. A queue has exactly one handler.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import ConfigurationError, DuplicateSubscription
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.routing import topic_matches
from frappe_eda.messaging.trust.senders import SenderPolicy
from frappe_eda.messaging.trust.signing import KeyRing

Handler = Callable[[Message], Any]
H = TypeVar("H", bound=Handler)

EXCHANGE_TYPES = ("topic", "direct", "fanout", "headers")
QUEUE_TYPES = ("classic", "quorum")


@dataclass(frozen=True)
class Subscription:
	"""One handler bound to one queue, which is bound to ``exchange`` with each of ``patterns``."""

	queue: str
	patterns: tuple[str, ...]
	exchange: str
	handler: Handler
	name: str
	exchange_type: str = "topic"
	retry: RetryPolicy | None = None
	queue_type: str | None = None
	# One consumer at a time gets the queue's messages (the others wait as hot standbys): strict order.
	single_active_consumer: bool = False
	# Whom the queue takes messages from (broker-validated sender, signatures); None: anyone.
	senders: SenderPolicy | None = None

	def accepts(self, routing_key: str) -> bool:
		"""Whether this handler subscribed to ``routing_key`` (a replay straight to the queue included)."""
		if self.exchange_type in ("fanout", "headers"):
			return True
		if self.exchange_type == "direct":
			return routing_key in self.patterns
		return any(topic_matches(p, routing_key) for p in self.patterns)

	def retry_policy(self, default: RetryPolicy) -> RetryPolicy:
		return self.retry or default


class HandlerRegistry:
	def __init__(self) -> None:
		self._by_queue: dict[str, Subscription] = {}

	def subscribe(
		self,
		pattern: str | Iterable[str],
		*,
		queue: str,
		exchange: str = "eda.events",
		exchange_type: str = "topic",
		max_attempts: int | None = None,
		retry_delays: Iterable[float] | None = None,
		queue_type: str | None = None,
		single_active_consumer: bool = False,
		senders: Iterable[str] | SenderPolicy | None = None,
		keys: KeyRing | str | None = None,
	) -> Callable[[H], H]:
		"""Register the decorated function as the handler of ``queue``; it receives a ``Message``.

		``max_attempts`` / ``retry_delays`` override the worker's default ``RetryPolicy`` for this
		queue; ``queue_type="quorum"`` asks for a quorum queue on a RabbitMQ cluster.
		``single_active_consumer=True`` has the broker deliver to one worker at a time, so the queue is
		handled in order however many workers run (the others take over when it goes); it is a queue
		argument, so switching it on for an existing queue means deleting the queue first.

		``senders`` names the broker users the queue takes messages from (the broker validates each
		message's ``user_id``): anything else is refused and dead-lettered, its handler never run.
		``keys`` (public keys, ``ed25519:...``) also requires each message to be signed by one of them.
		"""
		patterns = (pattern,) if isinstance(pattern, str) else tuple(pattern)
		if exchange_type not in EXCHANGE_TYPES:
			raise ConfigurationError(f"exchange_type {exchange_type!r} is not one of {EXCHANGE_TYPES}")
		if queue_type is not None and queue_type not in QUEUE_TYPES:
			raise ConfigurationError(f"queue_type {queue_type!r} is not one of {QUEUE_TYPES}")
		if not queue:
			raise ConfigurationError("a subscription needs a queue name")
		retry = None
		if max_attempts is not None or retry_delays is not None:
			base = RetryPolicy()
			retry = RetryPolicy(
				max_attempts=base.max_attempts if max_attempts is None else max_attempts,
				delays=base.delays if retry_delays is None else tuple(retry_delays),
			)

		policy = _sender_policy(senders, keys)

		def register(handler: H) -> H:
			self.add(
				Subscription(
					queue=queue,
					patterns=patterns,
					exchange=exchange,
					handler=handler,
					name=handler_name(handler),
					exchange_type=exchange_type,
					retry=retry,
					queue_type=queue_type,
					single_active_consumer=single_active_consumer,
					senders=policy,
				)
			)
			return handler

		return register

	def add(self, subscription: Subscription) -> None:
		existing = self._by_queue.get(subscription.queue)
		if existing is not None and existing.name != subscription.name:
			raise DuplicateSubscription(
				f"queue {subscription.queue!r} already has handler {existing.name}; "
				f"{subscription.name} needs a queue of its own"
			)
		# Re-importing a module registers the same handler again: keep the newest function.
		self._by_queue[subscription.queue] = subscription

	def remove(self, queue: str) -> None:
		self._by_queue.pop(queue, None)

	def for_queue(self, queue: str) -> Subscription | None:
		return self._by_queue.get(queue)

	def __iter__(self) -> Iterator[Subscription]:
		return iter(list(self._by_queue.values()))

	def __len__(self) -> int:
		return len(self._by_queue)

	def select(self, queues: Iterable[str] | None) -> list[Subscription]:
		"""The subscriptions of ``queues`` (all when None); an unknown queue name is an error."""
		if queues is None:
			return list(self)
		chosen = []
		for name in queues:
			sub = self._by_queue.get(name)
			if sub is None:
				raise ConfigurationError(
					f"no handler is registered for queue {name!r}; known: {sorted(self._by_queue)}"
				)
			chosen.append(sub)
		return chosen


def _sender_policy(
	senders: Iterable[str] | SenderPolicy | None, keys: KeyRing | str | None
) -> SenderPolicy | None:
	ring = KeyRing.from_text(keys) if isinstance(keys, str) else keys
	if isinstance(senders, SenderPolicy):
		return senders if ring is None else replace(senders, keys=ring)
	if senders is None:
		return None if ring is None else SenderPolicy.trusted(ring)
	names = [senders] if isinstance(senders, str) else list(senders)
	return SenderPolicy.only(names, ring)


def handler_name(handler: Handler) -> str:
	"""``module.qualname`` of a function; of the class for a callable object (which has no qualname)."""
	qualname = getattr(handler, "__qualname__", None) or type(handler).__qualname__
	return f"{getattr(handler, '__module__', None) or type(handler).__module__}.{qualname}"


def import_handler_modules(modules: Iterable[str]) -> None:
	"""Import the modules that hold ``@subscribe`` handlers (from configuration, never from messages)."""
	for module in modules:
		importlib.import_module(module)


default_registry = HandlerRegistry()
subscribe = default_registry.subscribe
