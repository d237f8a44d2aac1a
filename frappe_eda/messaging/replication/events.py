"""What a subscriber does for each event a source publishes.

The event is the last part of the message type (``item.on_update`` -> ``on_update``), as the outbox names
document messages (``{doctype}.{event}``). ``backfill`` and ``reconcile`` are the catch-up messages of
``eda backfill`` and reconciliation: the document as it is, applied like an update.
"""

from __future__ import annotations

import enum

from frappe_eda.messaging.errors import PermanentFailure


class Action(str, enum.Enum):
	UPSERT = "upsert"  # create or update the copy (and submit it when the source's copy is submitted)
	SUBMIT = "submit"
	CANCEL = "cancel"
	DELETE = "delete"
	RENAME = "rename"


ACTIONS = {
	"after_insert": Action.UPSERT,
	"on_update": Action.UPSERT,
	"on_change": Action.UPSERT,
	"on_update_after_submit": Action.UPSERT,
	"backfill": Action.UPSERT,
	"reconcile": Action.UPSERT,
	"on_submit": Action.SUBMIT,
	"on_cancel": Action.CANCEL,
	"on_trash": Action.DELETE,
	"after_delete": Action.DELETE,
	"after_rename": Action.RENAME,
}


class UnknownEvent(PermanentFailure):
	"""A message type whose event no subscription knows how to apply (never retried)."""

	def __init__(self, message_type: str):
		known = ", ".join(sorted(ACTIONS))
		super().__init__(
			f"message type {message_type[:120]!r} does not end in an event a subscription applies ({known})"
		)


def event_of(message_type: str) -> str:
	return message_type.rsplit(".", 1)[-1]


def action_for(message_type: str) -> Action:
	"""The action for ``message_type``; ``UnknownEvent`` for anything else."""
	action = ACTIONS.get(event_of(message_type))
	if action is None:
		raise UnknownEvent(message_type)
	return action
