"""Routing-key matching exactly as RabbitMQ's exchanges do it.

The test helper routes with this, so it must agree with the broker word for word: a key splits on
"." into words (the empty key has no words, "a..b" has an empty middle word), "*" matches exactly one
word, "#" matches zero or more. A test compares these answers with the real broker's.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any


def topic_matches(pattern: str, routing_key: str) -> bool:
	return _match(_words(pattern), _words(routing_key))


def route_matches(exchange_type: str, binding_key: str, routing_key: str) -> bool:
	"""Whether a binding with ``binding_key`` takes a message sent with ``routing_key``."""
	if exchange_type == "topic":
		return topic_matches(binding_key, routing_key)
	if exchange_type == "direct":
		return binding_key == routing_key
	if exchange_type == "fanout":
		return True
	raise ValueError(f"routing by key is not defined for {exchange_type!r} exchanges")


def headers_match(binding_arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
	"""A headers-exchange binding: ``x-match`` all (default) or any, ignoring ``x-`` arguments."""
	mode = binding_arguments.get("x-match", "all")
	wanted = {k: v for k, v in binding_arguments.items() if not k.startswith("x-")}
	hits = [k in headers and (v is None or headers[k] == v) for k, v in wanted.items()]
	if mode in ("any", "any-with-x"):
		return any(hits)
	return all(hits)


@lru_cache(maxsize=4096)
def _words(key: str) -> tuple[str, ...]:
	return tuple(key.split(".")) if key else ()


@lru_cache(maxsize=16384)
def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
	if not pattern:
		return not words
	head, rest = pattern[0], pattern[1:]
	if head == "#":
		return any(_match(rest, words[i:]) for i in range(len(words) + 1))
	if not words:
		return False
	if head == "*" or head == words[0]:
		return _match(rest, words[1:])
	return False
