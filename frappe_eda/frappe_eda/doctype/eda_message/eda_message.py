# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

from datetime import datetime, timedelta, timezone
from typing import Any

import frappe
from frappe import _
from frappe.model.document import Document

from frappe_eda.stores.doctype_columns import from_column, to_column

RELATED_LIMIT = 20  # of each kind shown in the form
RELATED_SCAN = 100  # candidates read to find them by a field of the envelope
RELATED_FIELDS = ["name", "message_id", "direction", "status", "routing_key", "queue", "created_at"]


class EDAMessage(Document):
	"""Written by the store; read, replayed and resolved in the desk (see frappe_eda.desk)."""

	@staticmethod
	def clear_old_logs(days=30):
		"""Log Settings retention: Processed and Published only; Failed and Dead wait to be resolved.

		EDA Settings has its own retention (the daily job); the longer of the two wins, so raising
		either one keeps messages longer instead of being undercut by the other. Retention 0 in EDA
		Settings means "keep everything", and Log Settings does not override that.
		"""
		from frappe_eda.settings import load_settings
		from frappe_eda.stores.doctype_store import DocTypeStore

		keep_days = load_settings().retention_days
		if keep_days <= 0:
			return 0
		days = max(int(days), keep_days)
		before = datetime.now(timezone.utc) - timedelta(days=days)
		return DocTypeStore(commit=False).delete_finished(before)


def on_doctype_update():
	frappe.db.add_unique(
		"EDA Message", ["message_id", "direction", "queue"], constraint_name="unique_message_key"
	)
	frappe.db.add_index(
		"EDA Message", ["direction", "status", "created_at"], index_name="direction_status_created"
	)
	# Permission checks list the referenced DocTypes, and Frappe's link checks look a document up here.
	frappe.db.add_index("EDA Message", ["reference_doctype", "reference_name"], index_name="reference")


@frappe.whitelist()
def related_messages(name: str) -> dict[str, Any]:
	"""The stored messages around ``name`` for its form: the one it replays and its replays, the
	message that caused it and those it caused (the envelope's ``causation_id``), and the others of its
	correlation. Read with ``frappe.get_list``, so a user sees only the messages they may read
	(``frappe_eda.desk.access``); ids are matched as the store writes them (escaped, indexed columns).
	"""
	if not isinstance(name, str) or not name or len(name) > 140:
		frappe.throw(_("name must be an EDA Message name"), frappe.ValidationError)
	from frappe_eda.desk.access import readable_message

	doc = readable_message(name)
	message_id = from_column("message_id", doc.message_id)
	# The envelope's ids as the store kept them (doctype_store.chain_ids), stored like message ids.
	causation_id = from_column("message_id", doc.causation_id)
	# A message without a correlation id starts its own: its follow-ups carry its id (Message.caused).
	correlation_id = from_column("message_id", doc.correlation_id) or message_id
	replayed_as = _messages({"replay_of": to_column("replay_of", message_id)}, name) if message_id else []
	related = {
		"replay_of": _by_id(doc.replay_of and from_column("replay_of", doc.replay_of), name),
		"replayed_as": replayed_as,
		"caused_by": _by_id(causation_id, name),
		"caused": _in_chain("causation_id", message_id, name),
		"correlation_root": _by_id(correlation_id, name)
		if correlation_id not in (causation_id, message_id)
		else [],
	}
	# The rest of the correlation: those not already listed as this message's cause or effects.
	listed = {row["name"] for rows in related.values() for row in rows}
	others = [row for row in _in_chain("correlation_id", correlation_id, name) if row["name"] not in listed]
	return {**related, "correlated": others, "correlation_id": correlation_id, "limit": RELATED_LIMIT}


def _by_id(message_id: str | None, name: str) -> list[dict[str, Any]]:
	if not message_id:
		return []
	return _messages({"message_id": to_column("message_id", message_id)}, name)


def _in_chain(key: str, value: str, name: str) -> list[dict[str, Any]]:
	"""Messages whose envelope's ``key`` (``correlation_id`` or ``causation_id``) is ``value``: an indexed
	column the store fills from each body (``doctype_store.chain_ids``). The collation may ignore case,
	so the candidates are compared exactly here."""
	if not value:
		return []
	stored = to_column("message_id", value)
	candidates = _messages({key: stored}, name, extra=[key], limit=RELATED_SCAN)
	return [row for row in candidates if row.pop(key) == stored][:RELATED_LIMIT]


def _messages(
	filters: dict[str, Any], name: str, extra: list[str] | None = None, limit: int = RELATED_LIMIT
) -> list[dict[str, Any]]:
	return frappe.get_list(
		"EDA Message",
		filters={**filters, "name": ["!=", name]},
		fields=RELATED_FIELDS + (extra or []),
		order_by="created_at asc",
		limit_page_length=limit,
	)
