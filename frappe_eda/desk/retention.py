"""Daily retention by EDA Settings: finished messages go, failures stay until someone resolves them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import frappe

from frappe_eda.setup.readiness import when_installed


@when_installed
def apply_retention() -> int:
	from frappe_eda.settings import load_settings
	from frappe_eda.stores.doctype_store import DocTypeStore

	days = load_settings().retention_days
	if days <= 0:
		return 0
	deleted = DocTypeStore(commit=True).delete_finished(datetime.now(timezone.utc) - timedelta(days=days))
	frappe.logger("frappe_eda").info(f"retention: deleted {deleted} messages older than {days} days")
	return deleted
