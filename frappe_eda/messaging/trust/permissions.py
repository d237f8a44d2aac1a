"""Least-privilege broker permissions for one server, from the traffic it needs.

RabbitMQ checks three regular expressions per user and vhost (configure, write, read) against the names
of queues and exchanges, and, on topic exchanges, two more per exchange against routing keys ("topic
permissions": write for the keys it publishes, read for the keys it binds its queues with). A server
gets:

- configure: its own queues, with their ``.retry.<delay>`` and ``.dead`` queues; no exchange (the
  administrator declares the shared exchanges once, so no member can delete or redeclare them);
- write: the exchanges it publishes to, its own queues (a binding writes to the queue) and the default
  exchange ``amq.default`` (its retries and dead-letter copies go to its own queues through it);
- read: its own queues (to consume) and the exchanges it binds them to;
- topic permissions on each topic exchange: write only the routing keys its destinations use, read
  (bind) only the keys its own queues are bound with, literally.

So a member can neither consume another's queue nor bind a queue of its own to another's keys, and what
it publishes carries its own broker-validated ``user_id``. Writing to ``amq.default`` lets it put a
message straight into any queue whose name it knows; such a message carries its own ``user_id`` and is
refused by the receiving queue's sender policy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from frappe_eda.messaging.errors import ConfigurationError

DEFAULT_EXCHANGE = "amq.default"
NOTHING = "^$"  # RabbitMQ's way to grant no resource: only the empty name matches


@dataclass(frozen=True)
class Route:
	"""Routing keys on one exchange: topic patterns (``*`` one word, ``#`` any words) or plain keys."""

	exchange: str
	key: str

	@classmethod
	def parse(cls, text: str) -> Route:
		"""``EXCHANGE:KEY``, as the commands take it."""
		exchange, sep, key = text.partition(":")
		if not sep or not exchange or not key:
			raise ConfigurationError(f"{text[:80]!r}: give EXCHANGE:KEY")
		return cls(exchange, key)


@dataclass(frozen=True)
class ServerTraffic:
	"""What one server does on the broker; ``Permissions`` follow from it."""

	user: str
	queues: tuple[str, ...] = ()
	publishes: tuple[Route, ...] = ()  # keys it publishes (patterns allowed)
	binds: tuple[Route, ...] = ()  # keys its queues are bound with, as bound
	topic_exchanges: frozenset[str] = field(default_factory=frozenset)

	def __post_init__(self) -> None:
		if not self.user or len(self.user) > 255:
			raise ConfigurationError("a broker user name is 1 to 255 characters")


@dataclass(frozen=True)
class TopicPermission:
	exchange: str
	write: str
	read: str


@dataclass(frozen=True)
class Permissions:
	user: str
	configure: str
	write: str
	read: str
	topics: tuple[TopicPermission, ...] = ()


def permissions_for(traffic: ServerTraffic) -> Permissions:
	"""The least a server with ``traffic`` needs; see the module's docstring."""
	queues = sorted(set(traffic.queues))
	own = _queue_names(queues)
	published = sorted({r.exchange for r in traffic.publishes if r.exchange})
	bound = sorted({r.exchange for r in traffic.binds if r.exchange})
	write = _alternation([*published, DEFAULT_EXCHANGE], extra=own)
	read = _alternation(bound, extra=own)
	topics = []
	for exchange in sorted(set(published) | set(bound)):
		if exchange not in traffic.topic_exchanges:
			continue
		keys_out = sorted({_topic_regex(r.key) for r in traffic.publishes if r.exchange == exchange})
		keys_in = sorted({re.escape(r.key) for r in traffic.binds if r.exchange == exchange})
		topics.append(TopicPermission(exchange, _anchored(keys_out), _anchored(keys_in)))
	return Permissions(traffic.user, f"^{own}$" if own else NOTHING, write, read, tuple(topics))


def _queue_names(queues: Iterable[str]) -> str:
	"""A group matching each queue and its retry and dead-letter queues, or ``""`` for none."""
	names = [re.escape(q) for q in queues if q]
	if not names:
		return ""
	return "(?:" + "|".join(names) + r")(?:\.retry\.[0-9a-z]+|\.dead(?:\.cleaning)?)?"


def _alternation(names: Iterable[str], extra: str = "") -> str:
	parts = [re.escape(n) for n in names if n]
	if extra:
		parts.append(extra)
	return "^(?:" + "|".join(parts) + ")$" if parts else NOTHING


def _anchored(regexes: list[str]) -> str:
	return "^(?:" + "|".join(regexes) + ")$" if regexes else NOTHING


def _topic_regex(pattern: str) -> str:
	"""A regex for the routing keys a topic pattern (``*``, ``#``) or a template (``wh1.{type}``) can
	produce; a template's placeholder stands for one or more characters, dots included."""
	words = []
	for word in pattern.split("."):
		if word == "*":
			words.append(r"[^.]+")
		elif word == "#":
			words.append(r".*")
		else:
			words.append(".+".join(re.escape(part) for part in re.split(r"\{[a-z_]+\}", word)))
	regex = r"\.".join(words)
	# "a.#" also matches "a": "#" may stand for no word, taking its dot with it
	return regex.replace(r"\..*", r"(?:\..*)?")
