"""The transactional outbox of a Frappe site.

``publish()`` writes an EDA Message (Pending) in the caller's database transaction and nothing else:
a rolled-back request publishes nothing. After commit the relay is woken and sends it with confirms;
if the broker is down the message waits as Pending and goes out, in order, when it is back.
"""

from __future__ import annotations

from typing import Any

import frappe

from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.errors import ConfigurationError
from frappe_eda.messaging.store import Direction, MessageRecord, Status
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
) -> Message:
	"""Queue a message for publishing when the current transaction commits; returns it.

	``to`` names an EDA Destination (its exchange and routing key); otherwise ``exchange`` (default:
	the settings' default exchange) and ``routing_key`` (default: ``message_type``).
	"""
	from frappe_eda.settings import load_outbox_settings
	from frappe_eda.stores.doctype_store import DocTypeStore

	settings = load_outbox_settings()
	target_exchange, target_key = resolve_destination(
		to, exchange, routing_key, message_type, settings.exchange
	)
	message = Message(
		type=message_type,
		payload={} if payload is None else payload,
		source=f"{frappe.local.site}",
		correlation_id=correlation_id,
		causation_id=causation_id,
	)
	record = MessageRecord(
		message_id=message.id,
		direction=Direction.OUTGOING,
		status=Status.PENDING,
		routing_key=target_key,
		body=encode(message).decode("utf-8"),
		exchange=target_exchange,
		message_type=message_type,
		reference_doctype=reference_doctype or "",
		reference_name=reference_name or "",
		created_at=message.created_at,
	)
	DocTypeStore(commit=False).insert_new([record])
	wake_relay_after_commit()
	return message


def resolve_destination(
	to: str | None, exchange: str | None, routing_key: str | None, message_type: str, default_exchange: str
) -> tuple[str, str]:
	if to:
		destination = frappe.db.get_value(
			"EDA Destination", to, ["exchange", "routing_key", "enabled"], as_dict=True
		)
		if destination is None:
			raise ConfigurationError(
				f"no EDA Destination named {to!r}; create it in the desk or check the name"
			)
		if not destination.enabled:
			raise ConfigurationError(f"EDA Destination {to!r} is disabled")
		key = routing_key or (destination.routing_key or message_type).format(type=message_type)
		return exchange or destination.exchange or default_exchange, key
	return exchange or default_exchange, routing_key or message_type
