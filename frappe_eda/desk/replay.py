"""Replaying EDA Messages from the desk: by record, by selection, by failure group, edited or as is.

Each call opens the site's broker connection for its duration (a web worker keeps none between
requests), replays through the core ``Replayer`` and reports per message what happened.
"""

from __future__ import annotations

import json
from typing import Any

import frappe

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.errors import EdaError
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.replay import Replayer
from frappe_eda.messaging.store import Direction

DIRECTIONS = {"Outgoing": Direction.OUTGOING, "Incoming": Direction.INCOMING}


def _replayer(connection: BrokerConnection) -> Replayer:
	from frappe_eda.settings import load_settings
	from frappe_eda.stores.doctype_store import DocTypeStore

	settings = load_settings()
	store = DocTypeStore(commit=True)
	publisher = Publisher(connection, store, exchange=settings.exchange, source=frappe.local.site)
	return Replayer(publisher, store, actor=frappe.session.user)


def replay_records(names: list[str], force: bool = False) -> list[dict[str, Any]]:
	from frappe_eda.settings import load_settings

	rows = frappe.get_all(
		"EDA Message", filters={"name": ["in", names]}, fields=["name", "message_id", "direction", "queue"]
	)
	results = []
	with BrokerConnection(load_settings().broker) as connection:
		replayer = _replayer(connection)
		for row in rows:
			try:
				result = replayer.replay(
					row.message_id, row.queue or None, direction=DIRECTIONS[row.direction], force=force
				)
				results.append({"name": row.name, "sent": result.sent, "detail": result.detail})
			except EdaError as e:
				results.append({"name": row.name, "sent": False, "detail": str(e)})
	return results


def replay_group(fingerprint: str, force: bool = False) -> list[dict[str, Any]]:
	"""Every unresolved Failed or Dead message whose unresolved errors carry ``fingerprint``."""
	message_ids = frappe.get_all(
		"EDA Error", filters={"fingerprint": fingerprint, "resolved": 0}, pluck="message_id", distinct=True
	)
	names = frappe.get_all(
		"EDA Message",
		filters={
			"message_id": ["in", message_ids or [""]],
			"status": ["in", ["Failed", "Dead"]],
			"resolved": 0,
		},
		pluck="name",
	)
	return replay_records(names, force=force)


def edit_and_replay(name: str, payload: str | dict) -> str:
	"""Send a corrected copy of EDA Message ``name``; returns the copy's EDA Message name."""
	from frappe_eda.settings import load_settings

	row = frappe.db.get_value("EDA Message", name, ["message_id", "direction", "queue"], as_dict=True)
	data = json.loads(payload) if isinstance(payload, str) else payload
	with BrokerConnection(load_settings().broker) as connection:
		copy = _replayer(connection).edit_and_replay(
			row.message_id, data, row.queue or None, direction=DIRECTIONS[row.direction]
		)
	mark_resolved([name])  # the original's errors too: the copy replaces it
	return frappe.db.get_value(
		"EDA Message",
		{"message_id": copy.message_id, "direction": row.direction, "queue": row.queue or ""},
		"name",
	)


def mark_resolved(names: list[str]) -> int:
	"""Resolve messages and their errors: they leave the failure lists, and retention may delete them."""
	message = frappe.qb.DocType("EDA Message")
	error = frappe.qb.DocType("EDA Error")
	message_ids = frappe.get_all("EDA Message", filters={"name": ["in", names]}, pluck="message_id")
	frappe.qb.update(message).set(message.resolved, 1).where(message.name.isin(names)).run()
	if message_ids:
		frappe.qb.update(error).set(error.resolved, 1).where(error.message_id.isin(message_ids)).run()
	return len(names)
