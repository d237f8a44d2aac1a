"""Delivery receipts across sites: the receiving site says what came of a message, the sending site
records it on its EDA Message.

Receiving side. A subscription that applied, skipped or refused a document calls ``send_receipt``
inside its handler's transaction, so the receipt (an outbox message of type ``eda.receipt``) commits
with what it says. A failure is receipted by the worker's store (``ReceiptingStore``): once the
failure is recorded, a Retrying (will be tried again) or Refused (dead) receipt joins it, in the same
transaction and in a savepoint of its own, so a receipt that cannot be written never costs the error
record. A receipt goes only to the routing key the source asked for (``eda-reply-to``, checked by
``addressing.receipt_key``) and never asks for one back.

Sending side. ``receipt_subscription()`` is the worker's handler for this site's receipts queue;
``record_receipt`` keeps one EDA Receipt per (message, server, subscription), the newest by the time
the server decided. Receipt text comes from other servers: it is stored HTML-escaped like every
producer text of the store (``doctype_columns``) and cut to its column, and a time in the future counts
as the time it arrived, so no server can pin its receipt above later ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import frappe

from frappe_eda.messaging.context import current_context
from frappe_eda.messaging.envelope import Message, decode, utcnow
from frappe_eda.messaging.errors import (
	BadSignature,
	InvalidMessage,
	UnprovenSender,
	UnsignedMessage,
	UntrustedSender,
	WrongSender,
)
from frappe_eda.messaging.registry import Subscription
from frappe_eda.messaging.replication import addressing
from frappe_eda.messaging.replication.receipts import (
	RECEIPT_TYPE,
	Receipt,
	ReceiptOutcome,
	parse_receipt,
)
from frappe_eda.messaging.store import Direction, ErrorRecord, Status
from frappe_eda.replication import SUBSCRIPTION_HANDLER_PREFIX
from frappe_eda.stores.doctype_columns import escape, from_column, naive_utc, to_column
from frappe_eda.stores.doctype_store import DIRECTION_LABELS, DocTypeStore
from frappe_eda.stores.doctype_transaction import site_transaction

log = logging.getLogger(__name__)

RECEIPT = "EDA Receipt"
MESSAGE = "EDA Message"
SUBSCRIPTION = "EDA Subscription"
DESTINATION = "EDA Destination"
RECEIPT_QUEUE_PREFIX = "eda.receipts."
RECEIPT_HANDLER = "frappe_eda.replication.receipts.record_receipt"
# Refusals of a message whose sender is not proven: never answered with a receipt.
UNTRUSTED = frozenset(
	f"{cls.__module__}.{cls.__qualname__}"
	for cls in (UntrustedSender, UnprovenSender, WrongSender, UnsignedMessage, BadSignature)
)
# What a failure's status says to the source.
FAILURE_OUTCOMES = {Status.FAILED: ReceiptOutcome.RETRYING, Status.DEAD: ReceiptOutcome.REFUSED}
# Column sizes of EDA Receipt (its JSON), which escaped text must fit.
NAME_CHARS = 140
DETAIL_CHARS = 4000
RECEIPT_FIELDS = [
	"name",
	"eda_message",
	"server",
	"subscription",
	"outcome",
	"detail",
	"document",
	"outcome_at",
	"received_at",
]


# --- the receiving site ----------------------------------------------------------------------------


def send_receipt(
	message: Message,
	subscription: str,
	outcome: ReceiptOutcome,
	detail: str = "",
	document: str = "",
	exchange: str | None = None,
) -> None:
	"""Queue a receipt for ``message`` in the current transaction, when its source asked for one.

	Nothing when the message has no usable ``eda-reply-to`` or is a receipt itself. A receipt that
	cannot be queued is logged and rolled back to a savepoint: the document it is about still applies.
	"""
	try:
		with site_transaction(commit=False):
			publish_receipt(message, subscription, outcome, detail, document, exchange)
	except Exception:
		log.warning("no receipt sent for message %s", message.id, exc_info=True)


def publish_receipt(
	message: Message,
	subscription: str,
	outcome: ReceiptOutcome,
	detail: str = "",
	document: str = "",
	exchange: str | None = None,
) -> Message | None:
	"""``send_receipt`` without the safety net: the outbox message, or None when none is due."""
	from frappe_eda.outbox import publish
	from frappe_eda.settings import load_outbox_settings

	if message.type == RECEIPT_TYPE:
		return None  # never a receipt for a receipt
	key = addressing.receipt_key(message.headers)
	if key is None:
		return None
	receipt = Receipt(
		message_id=message.id,
		server=frappe.local.site,
		subscription=subscription,
		outcome=ReceiptOutcome(outcome),
		detail=detail or "",
		document=document or "",
		at=utcnow().isoformat(),
	)
	return publish(
		RECEIPT_TYPE,
		receipt.payload(),
		exchange=exchange or load_outbox_settings().exchange,
		routing_key=key,
		causation_id=message.id,
		correlation_id=message.correlation_id or message.id,
		# No destination, so no eda-to and no eda-reply-to; the receipt starts here.
		headers={addressing.ORIGIN: frappe.local.site},
	)


class ReceiptingStore(DocTypeStore):
	"""The worker's store: a subscription's failure is also receipted to the source (Retrying while it
	will be tried again, Refused once it is dead), in the transaction that records the failure."""

	def add_error(self, error: ErrorRecord) -> None:
		super().add_error(error)
		if error.direction is not Direction.INCOMING:
			return
		if not (error.handler or "").startswith(SUBSCRIPTION_HANDLER_PREFIX):
			return
		if error.exception_type in UNTRUSTED:
			# Nothing proves who sent it: its reply-to is a stranger's instruction, not the source's.
			return
		try:
			with self.transaction():
				receipt_failure(self, error)
		except Exception:
			log.warning("no failure receipt sent for message %s", error.message_id, exc_info=True)


def receipt_failure(store: DocTypeStore, error: ErrorRecord) -> Message | None:
	"""The receipt of a subscription's failure just recorded (its EDA Message says Failed or Dead)."""
	record = store.get(error.message_id, Direction.INCOMING, error.queue)
	if record is None or record.status not in FAILURE_OUTCOMES:
		return None
	try:
		message = decode(record.body.encode("utf-8"))
	except (InvalidMessage, UnicodeEncodeError):
		return None  # bad input: no envelope, so no reply-to to answer on
	subscription = error.handler[len(SUBSCRIPTION_HANDLER_PREFIX) :]
	return publish_receipt(
		message,
		subscription,
		FAILURE_OUTCOMES[record.status],
		detail=failure_detail(error),
		exchange=subscription_exchange(subscription),
	)


def failure_detail(error: ErrorRecord) -> str:
	"""``MissingLink: missing Item ITEM-9``: the exception's class name and the first line of its text."""
	kind = (error.exception_type or "").rsplit(".", 1)[-1]
	text = (error.error or "").strip().split("\n", 1)[0]
	return f"{kind}: {text}" if kind and text != kind else text or kind


def subscription_exchange(subscription: str) -> str | None:
	"""The EDA Subscription's exchange; None (the settings' default) when it has none or is unknown."""
	try:
		if not frappe.db.exists("DocType", SUBSCRIPTION) or not frappe.db.exists(SUBSCRIPTION, subscription):
			return None
		return frappe.db.get_value(SUBSCRIPTION, subscription, "exchange") or None
	except Exception:
		log.warning("could not read the exchange of EDA Subscription %s", subscription, exc_info=True)
		return None


# --- the sending site ------------------------------------------------------------------------------


def receipts_wanted() -> bool:
	"""Whether an enabled EDA Destination asks for receipts (the worker then consumes them)."""
	if not frappe.db.has_column(DESTINATION, "request_receipts"):
		return False
	return bool(frappe.db.exists(DESTINATION, {"enabled": 1, "request_receipts": 1}))


def receipt_queue(site: str | None = None) -> str:
	"""``eda.receipts.head_example_com``: the queue this site's receipts arrive on."""
	key = addressing.receipt_key_for(site or frappe.local.site)
	return RECEIPT_QUEUE_PREFIX + key[len(addressing.RECEIPT_PREFIX) :]


def receipt_subscription(exchange: str | None = None, queue: str | None = None) -> Subscription:
	"""The worker's handler of this site's receipts: bound to ``receipt_key_for(site)`` on ``exchange``
	(default: the settings' exchange), calling ``record_receipt``."""
	from frappe_eda.settings import load_outbox_settings

	return Subscription(
		queue=queue or receipt_queue(),
		patterns=(addressing.receipt_key_for(frappe.local.site),),
		exchange=exchange or load_outbox_settings().exchange,
		handler=record_receipt,
		name=RECEIPT_HANDLER,
	)


def record_receipt(message: Message) -> str | None:
	"""Keep a receipt on the outgoing EDA Message it answers; returns the EDA Receipt's name.

	A payload that is no receipt raises ``InvalidReceipt`` (dead-lettered). A receipt for a message
	this site does not have (deleted by retention, or never sent from here) is logged and dropped. An
	older receipt (by the server's time) than the one kept is dropped too; otherwise it replaces it.
	"""
	receipt = parse_receipt(message.payload)
	sent = _outgoing_message(receipt.message_id)
	if sent is None:
		log.info(
			"receipt from %s for unknown message %s dropped", receipt.server[:80], receipt.message_id[:80]
		)
		return None
	check_receipt_sender(receipt, sent)
	received = naive_utc(utcnow())
	at = _receipt_time(receipt.at, received)
	name = receipt_name(receipt.message_id, receipt.server, receipt.subscription)
	values = {
		"eda_message": sent.name,
		"message_id": sent.message_id,
		"server": _fit(receipt.server, NAME_CHARS),
		"subscription": _fit(receipt.subscription, NAME_CHARS),
		"outcome": receipt.outcome.value,
		"detail": _fit(receipt.detail, DETAIL_CHARS),
		"document": _fit(receipt.document, NAME_CHARS),
		"outcome_at": at,
		"received_at": received,
		"reference_doctype": sent.reference_doctype or None,
		"reference_name": sent.reference_name or None,
	}
	kept = frappe.db.get_value(RECEIPT, name, ["outcome_at"], as_dict=True, for_update=True)
	if kept is None:
		frappe.get_doc({"doctype": RECEIPT, "name": name, **values}).db_insert()
		return name
	if kept.outcome_at and frappe.utils.get_datetime(kept.outcome_at) > at:
		log.info("receipt %s from %s is older than the one kept; dropped", name, receipt.server[:80])
		return name
	frappe.db.set_value(RECEIPT, name, values, update_modified=True)
	return name


class ForgedReceipt(UntrustedSender):
	"""A receipt its broker-validated sender may not give: for another server, or for a message that
	was not addressed to it."""


def check_receipt_sender(receipt: Receipt, sent: Any) -> None:
	"""Only the server a message was addressed to answers for it, and only for itself: the receipt's
	``server`` must be its broker-validated sender (a server publishes as the broker user named after
	it), and one of the message's ``eda-to`` servers. A trusted network (EDA Settings) skips this."""
	from frappe_eda.settings import trusted_network

	if trusted_network():
		return
	sender = current_context().sender
	if not sender:
		raise UnprovenSender(f"the server it names ({receipt.server[:80]!r})")
	if sender != receipt.server:
		raise ForgedReceipt(
			f"a receipt for {receipt.server[:80]!r} sent by broker user {sender[:80]!r}: a server answers "
			"only for itself; not recorded"
		)
	try:
		headers = (json.loads(sent.payload or "{}") or {}).get("headers") or {}
	except (ValueError, AttributeError):
		headers = {}
	targets = addressing.addressed_to(headers if isinstance(headers, dict) else {})
	if targets and sender not in targets:
		raise ForgedReceipt(
			f"a receipt from {sender[:80]!r} for message {receipt.message_id[:80]!r}, which was sent to "
			f"{', '.join(t[:80] for t in targets[:5])}: not recorded"
		)


def receipt_name(message_id: str, server: str, subscription: str) -> str:
	"""One EDA Receipt per message, server and subscription: a digest, stable and within a name's size."""
	key = json.dumps([message_id, server, subscription], ensure_ascii=True)
	return hashlib.sha256(key.encode("ascii")).hexdigest()[:32]


def receipts_of(message_names: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
	"""The receipts of each EDA Message (by name), newest first: the caller checked it may read them."""
	names = list(dict.fromkeys(n for n in message_names if n))
	found: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
	if not names or not frappe.db.table_exists(RECEIPT):
		return found
	rows = frappe.get_all(
		RECEIPT,
		filters={"eda_message": ["in", names]},
		fields=RECEIPT_FIELDS,
		order_by="outcome_at desc, server asc",
		limit_page_length=0,
	)
	for row in rows:
		found[row.pop("eda_message")].append(row)
	return found


def _outgoing_message(message_id: str) -> Any:
	"""The outgoing EDA Message with exactly this id (the column's collation may ignore case)."""
	if not message_id:
		return None
	stored = to_column("message_id", message_id)
	rows = frappe.get_all(
		MESSAGE,
		filters={"message_id": stored, "direction": DIRECTION_LABELS[Direction.OUTGOING]},
		fields=["name", "message_id", "reference_doctype", "reference_name", "payload"],
		limit_page_length=5,
	)
	return next((row for row in rows if from_column("message_id", row.message_id) == message_id), None)


def _receipt_time(text: str, received: datetime) -> datetime:
	"""When the server decided (naive UTC); none, or a time after it arrived, counts as its arrival."""
	if not text:
		return received
	try:
		at = datetime.fromisoformat(text)
	except ValueError:
		return received
	if at.tzinfo is None:
		at = at.replace(tzinfo=timezone.utc)
	return min(naive_utc(at), received)


def _fit(text: str, limit: int) -> str:
	"""``text`` HTML-escaped, as the store writes producer text, cut so that it fits ``limit``."""
	value = escape(text or "")
	if len(value) <= limit:
		return value
	kept, size = [], 0
	for char in text:
		piece = escape(char)
		if size + len(piece) > limit - 1:
			break
		kept.append(piece)
		size += len(piece)
	return "".join(kept) + "…"
