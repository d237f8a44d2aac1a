"""Which server a message is for, where it started, and where its receipt goes.

Three headers of the envelope (inside the body, so they are replayed with it):

- ``eda-to``: the servers a message is addressed to (an EDA Destination's target servers). A
  subscription takes only messages addressed to its own server or to nobody in particular; anything
  else reached it by a routing mistake and is refused, so one warehouse never applies another's data.
- ``eda-origin``: the server where the change first happened. A copy written by a subscription that
  publishes onwards keeps its origin; a subscription never applies a change that started on its own
  server (an echo).
- ``eda-reply-to``: the routing key the source wants receipts on. Only keys under ``eda.receipt.`` are
  honoured, so a hostile producer cannot make a subscriber publish anywhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from frappe_eda.messaging.errors import PermanentFailure

TO = "eda-to"
ORIGIN = "eda-origin"
REPLY_TO = "eda-reply-to"
RECEIPT_PREFIX = "eda.receipt."
MAX_SERVER_NAME = 140
_SAFE_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,200}")  # fullmatch: "$" would let a trailing "\n" through


class NotAddressedHere(PermanentFailure):
	"""A message addressed to other servers reached this subscription (a binding or routing mistake)."""

	def __init__(self, addressed: list[str], here: str):
		shown = ", ".join(a[:MAX_SERVER_NAME] for a in addressed[:5])
		super().__init__(
			f"addressed to {shown}, not to this server ({here}): not applied; check the subscription's "
			"routing-key pattern and the source's EDA Destination"
		)


def addressed_to(headers: Mapping[str, Any]) -> list[str]:
	"""The servers in ``eda-to`` (a name or a list of names); anything else counts as no address."""
	value = headers.get(TO)
	if isinstance(value, str):
		value = [value]
	if not isinstance(value, list):
		return []
	return [v.strip() for v in value if isinstance(v, str) and v.strip()]


def check_addressed(headers: Mapping[str, Any], here: str) -> None:
	"""Raise ``NotAddressedHere`` unless the message is for ``here`` or for no server in particular."""
	addressed = addressed_to(headers)
	if addressed and here not in addressed:
		raise NotAddressedHere(addressed, here)


def origin_of(headers: Mapping[str, Any], source: str) -> str:
	"""Where the change started: ``eda-origin`` when it is a name, else the message's source."""
	value = headers.get(ORIGIN)
	if isinstance(value, str) and value.strip():
		return value.strip()[:MAX_SERVER_NAME]
	return (source or "")[:MAX_SERVER_NAME]


def is_echo(headers: Mapping[str, Any], source: str, here: str) -> bool:
	"""A change that started on this server, coming back: never applied again."""
	return bool(here) and origin_of(headers, source) == here[:MAX_SERVER_NAME]


def receipt_key(headers: Mapping[str, Any]) -> str | None:
	"""The receipt routing key the source asked for, when it is one we may publish to."""
	value = headers.get(REPLY_TO)
	if isinstance(value, str) and value.startswith(RECEIPT_PREFIX) and _SAFE_KEY.fullmatch(value):
		return value
	return None


def receipt_key_for(server: str) -> str:
	"""The routing key a server's receipts come back on (``eda.receipt.head_example_com``)."""
	return RECEIPT_PREFIX + re.sub(r"[^A-Za-z0-9_\-]", "_", server)[:150]
