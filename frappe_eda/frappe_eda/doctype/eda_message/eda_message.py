# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

from datetime import datetime, timedelta, timezone

import frappe
from frappe.model.document import Document


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
