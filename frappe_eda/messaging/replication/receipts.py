"""The receipt a subscriber sends back: it applied a document, skipped it, or refused it.

A receipt is a small message (type ``eda.receipt``) to the routing key the source asked for
(``addressing.receipt_key``). The source records it on its outgoing message, so its desk says "applied
at wh1 at 10:04" or "refused: missing Item ITEM-9" per server. Receipts come from other servers: every
field is checked and cut to size before it is stored, and a receipt is never answered with one.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from frappe_eda.messaging.errors import PermanentFailure
from frappe_eda.messaging.storable import printable

RECEIPT_TYPE = "eda.receipt"
MAX_DETAIL = 1000
MAX_NAME = 140


class ReceiptOutcome(str, enum.Enum):
	APPLIED = "Applied"
	SKIPPED = "Skipped"  # stale, already applied, nothing to do, an echo, a conflict kept local
	RETRYING = "Retrying"  # failed, will be tried again (a missing link, a deadlock)
	REFUSED = "Refused"  # dead: will not be applied unless replayed


class InvalidReceipt(PermanentFailure):
	"""A receipt without the fields a source needs to record it."""


@dataclass(frozen=True)
class Receipt:
	message_id: str  # the source's message this answers
	server: str  # the server that applied it (its site name)
	subscription: str
	outcome: ReceiptOutcome
	detail: str = ""
	document: str = ""  # the local document's name on that server
	at: str = ""  # when, as ISO text in UTC

	def payload(self) -> dict[str, Any]:
		return {
			"message_id": self.message_id,
			"server": self.server,
			"subscription": self.subscription,
			"outcome": self.outcome.value,
			"detail": self.detail[:MAX_DETAIL],
			"document": self.document,
			"at": self.at,
		}


def parse_receipt(payload: Any) -> Receipt:
	"""A ``Receipt`` from another server's payload; ``InvalidReceipt`` when it cannot be recorded."""
	if not isinstance(payload, Mapping):
		raise InvalidReceipt(f"a receipt's payload is a {type(payload).__name__}, not an object")
	texts = {}
	for key in ("message_id", "server", "subscription", "outcome", "detail", "document", "at"):
		value = payload.get(key, "")
		if value is None:
			value = ""
		if not isinstance(value, str):
			raise InvalidReceipt(f"a receipt's {key} is a {type(value).__name__}, not text")
		texts[key] = printable(value)
	if not texts["message_id"] or not texts["server"]:
		raise InvalidReceipt("a receipt needs the message_id it answers and the server that sends it")
	try:
		outcome = ReceiptOutcome(texts["outcome"])
	except ValueError:
		known = ", ".join(o.value for o in ReceiptOutcome)
		raise InvalidReceipt(
			f"a receipt's outcome is {texts['outcome'][:40]!r}, not one of {known}"
		) from None
	at = texts["at"][:40]
	if at:
		try:
			datetime.fromisoformat(at)
		except ValueError:
			raise InvalidReceipt(f"a receipt's time {at!r} is not an ISO timestamp") from None
	return Receipt(
		message_id=texts["message_id"][:MAX_NAME],
		server=texts["server"][:MAX_NAME],
		subscription=texts["subscription"][:MAX_NAME],
		outcome=outcome,
		detail=texts["detail"][:MAX_DETAIL],
		document=texts["document"][:MAX_NAME],
		at=at,
	)
