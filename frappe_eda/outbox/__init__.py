"""The transactional outbox of a Frappe site.

``publish()`` writes an EDA Message (Pending) in the caller's database transaction and nothing else:
a rolled-back request publishes nothing. After commit the relay is woken and sends it with confirms;
if the broker is down the message waits as Pending and goes out, in order, when it is back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import frappe

from frappe_eda.messaging import wire
from frappe_eda.messaging.envelope import DEFAULT_MAX_BYTES, Message, encode
from frappe_eda.messaging.errors import DestinationUnavailable
from frappe_eda.messaging.publisher import envelope_from_record
from frappe_eda.messaging.replication import addressing
from frappe_eda.messaging.store import Direction, MessageRecord, Status
from frappe_eda.messaging.templates import render_template
from frappe_eda.messaging.trust.signing import SIGNATURE
from frappe_eda.outbox.wakeup import wake_relay_after_commit


def publish(
	message_type: str,
	payload: Any = None,
	*,
	to: str | None = None,
	exchange: str | None = None,
	routing_key: str | None = None,
	reference_doctype: str | None = None,
	reference_name: str | None = None,
	correlation_id: str | None = None,
	causation_id: str | None = None,
	headers: Mapping[str, Any] | None = None,
) -> Message:
	"""Queue a message for publishing when the current transaction commits; returns it.

	``to`` names an EDA Destination (its exchange and routing key); otherwise ``exchange`` (default:
	the settings' default exchange) and ``routing_key`` (default: ``message_type``). A missing or
	disabled destination raises ``DestinationUnavailable`` here, and a message no consumer would take (a
	body over 1 MiB: ``BodyTooLarge``) or AMQP cannot carry (``FieldTooLong``, ...) its ``Unsendable``
	error; document rules catch both and record the message Failed instead
	(``frappe_eda.outbox.unsendable``), so a user's save never fails on it.

	Every message says where its change started (``eda-origin``: this site, or the origin of the message
	a subscription is applying), and a message to a destination names the servers it is for
	(``eda-to``) and, when the destination asks for receipts, where they go (``eda-reply-to``); see
	``frappe_eda.messaging.replication.addressing``.
	"""
	from frappe_eda.settings import load_outbox_settings
	from frappe_eda.stores.doctype_store import DocTypeStore

	settings = load_outbox_settings()
	destination = _destination(to) if to else None  # one read of the EDA Destination per message
	target_exchange, target_key = _target(destination, exchange, routing_key, message_type, settings.exchange)
	message = Message(
		type=message_type,
		payload={} if payload is None else payload,
		source=f"{frappe.local.site}",
		correlation_id=correlation_id,
		causation_id=causation_id,
		headers={**routing_headers(destination), **(headers or {})},
	)
	record = outgoing_record(
		message,
		Status.PENDING,
		exchange=target_exchange,
		routing_key=target_key,
		reference_doctype=reference_doctype,
		reference_name=reference_name,
	)
	# What no consumer would accept, or AMQP cannot carry, fails here, in the caller's code, rather than
	# as a Failed row the relay finds later.
	problem = wire.check(envelope_from_record(record), max_bytes=DEFAULT_MAX_BYTES)
	if problem is not None:
		raise problem
	DocTypeStore(commit=False).insert_new([record])
	wake_relay_after_commit()
	return message


def outgoing_record(
	message: Message,
	status: Status,
	*,
	exchange: str,
	routing_key: str,
	reference_doctype: str | None = None,
	reference_name: str | None = None,
	last_error: str = "",
) -> MessageRecord:
	"""The outbox row of ``message``: the exact envelope text the relay will send, signed with this site's
	signing key when it has one (the signature is kept with the row, so a relay or a replay sends it)."""
	from frappe_eda.settings import load_signer

	body = encode(message)
	signer = load_signer()
	return MessageRecord(
		message_id=message.id,
		direction=Direction.OUTGOING,
		status=status,
		routing_key=routing_key,
		body=body.decode("utf-8"),
		headers={SIGNATURE: signer.sign(body)} if signer is not None else {},
		exchange=exchange,
		message_type=message.type,
		reference_doctype=reference_doctype or "",
		reference_name=reference_name or "",
		created_at=message.created_at,
		last_error=last_error,
	)


def resolve_destination(
	to: str | None, exchange: str | None, routing_key: str | None, message_type: str, default_exchange: str
) -> tuple[str, str]:
	"""Where a message goes: ``(exchange, routing_key)``.

	Raises ``DestinationUnavailable`` for a missing or disabled EDA Destination and
	``InvalidRoutingKeyTemplate`` for a destination key with anything but ``{type}`` in it; the message
	type itself is never read as a template.
	"""
	return _target(_destination(to) if to else None, exchange, routing_key, message_type, default_exchange)


def _destination(to: str) -> Any:
	"""The enabled EDA Destination ``to``: what routes a message and what its headers say."""
	destination = frappe.db.get_value(
		"EDA Destination",
		to,
		["exchange", "routing_key", "enabled", "target_servers", "request_receipts"],
		as_dict=True,
	)
	if destination is None:
		raise DestinationUnavailable(to, "does not exist")
	if not destination.enabled:
		raise DestinationUnavailable(to, "is disabled")
	return destination


def _target(
	destination: Any,
	exchange: str | None,
	routing_key: str | None,
	message_type: str,
	default_exchange: str,
) -> tuple[str, str]:
	if destination is None:
		return exchange or default_exchange, routing_key or message_type
	key = routing_key or (
		render_template(destination.routing_key, type=message_type)
		if destination.routing_key
		else message_type
	)
	return exchange or destination.exchange or default_exchange, key


def routing_headers(destination: Any = None) -> dict[str, Any]:
	"""``eda-origin`` always; ``eda-to`` and ``eda-reply-to`` from the EDA Destination row, if any."""
	headers: dict[str, Any] = {
		addressing.ORIGIN: getattr(frappe.local.flags, "eda_origin", None) or frappe.local.site
	}
	if destination is not None:
		if servers := target_servers(destination.target_servers):
			headers[addressing.TO] = servers
		if destination.request_receipts:
			headers[addressing.REPLY_TO] = addressing.receipt_key_for(frappe.local.site)
	return headers


def target_servers(text: str | None) -> list[str]:
	"""An EDA Destination's *Target Servers*: site names, one per line (or comma-separated)."""
	return [server.strip() for server in (text or "").replace(",", "\n").splitlines() if server.strip()]
