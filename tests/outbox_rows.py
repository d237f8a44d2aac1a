"""What several test modules need of an outbox: a PENDING row as a document hook writes it, and the ids a
queue holds, in order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.store import Direction, MessageRecord, Status


def pending_row(message: Message, exchange: str, created_at: datetime | None = None) -> MessageRecord:
	"""An outbox row as the Frappe document hook writes it: PENDING, not yet sent (created at
	``created_at``, else the message's own time)."""
	return MessageRecord(
		message_id=message.id,
		direction=Direction.OUTGOING,
		status=Status.PENDING,
		routing_key=message.type,
		body=encode(message).decode(),
		exchange=exchange,
		message_type=message.type,
		created_at=created_at or message.created_at,
	)


def queued_ids(raw_channel: Any, queue: str) -> list[str]:
	"""The message ids ``queue`` holds, in order, taken off it (``basic_get`` with auto-ack)."""
	ids = []
	while True:
		method, properties, _body = raw_channel.basic_get(queue, auto_ack=True)
		if method is None:
			return ids
		ids.append(properties.message_id)
