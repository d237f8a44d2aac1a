"""EDA Replica: what a subscription applied last to each source document.

One row per (subscription, source server, source name), named by a digest of the three so that two
workers applying changes of one document at once meet on one primary key: the second waits on the row
lock (``for_update``) or, when both insert, fails with a duplicate key and is retried. Rows are written
with the query builder, not as documents: they are bookkeeping of the worker, read only in the desk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import frappe

from frappe_eda.messaging.replication.planning import Applied
from frappe_eda.messaging.replication.versions import DocVersion

REPLICA = "EDA Replica"


@dataclass
class ReplicaRow:
	name: str
	local_name: str
	status: str
	source_version: str
	local_modified: datetime | None

	def applied(self) -> Applied | None:
		"""What was applied, for planning; ``None`` for a row that never applied (only skipped)."""
		if not self.source_version:
			return None
		return Applied(
			version=DocVersion.from_text(self.source_version),
			deleted=self.status == "Deleted",
			local_modified=self.local_modified,
		)


def replica_name(subscription: str, source: str, source_name: str) -> str:
	key = "\x1f".join((subscription, source, source_name)).encode("utf-8", "backslashreplace")
	return hashlib.sha1(key).hexdigest()


def load(subscription: str, source: str, source_name: str) -> ReplicaRow | None:
	"""The row, locked for the rest of the message's transaction."""
	name = replica_name(subscription, source, source_name)
	table = frappe.qb.DocType(REPLICA)
	# The query builder directly: frappe.db.get_value parses its fields with sqlparse, ~0.3 ms a
	# message on the worker's hot path (measured with py-spy).
	rows = (
		frappe.qb.from_(table)
		.select(table.name, table.local_name, table.status, table.source_version, table.local_modified)
		.where(table.name == name)
		.for_update()
		.run(as_dict=True)
	)
	if not rows:
		return None
	row = rows[0]
	return ReplicaRow(
		name=row.name,
		local_name=row.local_name or "",
		status=row.status or "",
		source_version=row.source_version or "",
		local_modified=row.local_modified,
	)


def record(
	existing: ReplicaRow | None,
	*,
	subscription: str,
	source: str,
	source_doctype: str,
	source_name: str,
	document_type: str,
	local_name: str,
	status: str,
	message_id: str,
	event: str,
	detail: str = "",
	version: DocVersion | None = None,
	local_modified: Any = None,
	source_hash: str | None = None,
) -> None:
	"""Insert or update the row. ``version`` (what was applied) is kept as it was when not given: a
	skipped or refused change does not move the document's applied version."""
	now = frappe.utils.now_datetime()
	values: dict[str, Any] = {
		"status": status,
		"local_name": local_name,
		"last_message": message_id[:140],
		"last_event": event[:140],
		"applied_at": now,
		"detail": detail[:2000],
	}
	if version is not None:
		values["source_version"] = version.text()
		values["source_modified"] = version.modified
		values["local_modified"] = local_modified
	if source_hash is not None:
		values["source_hash"] = source_hash
	table = frappe.qb.DocType(REPLICA)
	if existing is None:
		user = frappe.session.user
		row = {
			"name": replica_name(subscription, source, source_name),
			"owner": user,
			"modified_by": user,
			"creation": now,
			"modified": now,
			"docstatus": 0,
			"subscription": subscription,
			"source": source[:140],
			"source_doctype": source_doctype,
			"source_name": source_name,
			"document_type": document_type,
			**values,
		}
		frappe.qb.into(table).columns(*row).insert(*row.values()).run()
		return
	query = frappe.qb.update(table).set(table.modified, now)
	for column, value in values.items():
		query = query.set(table[column], value)
	query.where(table.name == existing.name).run()


def tombstone(existing: ReplicaRow | None, book: dict[str, Any], version: DocVersion, detail: str) -> None:
	"""Mark the source document gone here at ``version`` (deleted, or renamed away): a change older than
	that, arriving late, is then stale instead of bringing a copy back under this name."""
	record(existing, **book, local_name="", status="Deleted", version=version, source_hash="", detail=detail)
