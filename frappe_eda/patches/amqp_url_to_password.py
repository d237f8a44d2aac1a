"""EDA Settings' AMQP URL became a Password field: move a stored URL into ``__Auth`` (encrypted) and
scrub the password out of the Version rows that recorded the URL in clear while it was a Data field."""

from __future__ import annotations

import json
import re
from typing import Any

import frappe
from frappe.utils.password import set_encrypted_password

SETTINGS = "EDA Settings"
FIELD = "amqp_url"
# scheme://user:PASSWORD@ ; a password cannot hold an unencoded "@" or "/", so this finds its end.
URL_PASSWORD = re.compile(r"(amqps?://[^:/@\s]*:)([^@/\s]+)(@)", re.IGNORECASE)


def execute() -> None:
	move_url_to_auth()
	scrub_versions()


def move_url_to_auth() -> None:
	singles = frappe.qb.Table("tabSingles")
	rows = (
		frappe.qb.from_(singles)
		.select(singles.value)
		.where((singles.doctype == SETTINGS) & (singles.field == FIELD))
		.run(pluck=True)
	)
	value = rows[0] if rows else None
	if not value or set(value) == {"*"}:
		return
	set_encrypted_password(SETTINGS, SETTINGS, value, FIELD)
	frappe.db.set_single_value(SETTINGS, FIELD, "*" * len(value), update_modified=False)
	frappe.clear_document_cache(SETTINGS, SETTINGS)


def scrub_versions() -> int:
	"""Rewrite every Version row of EDA Settings that holds a URL with a password; returns how many."""
	scrubbed = 0
	for version in frappe.get_all("Version", filters={"ref_doctype": SETTINGS}, fields=["name", "data"]):
		clean = redact_json(version.data or "")
		if clean != (version.data or ""):
			frappe.db.set_value("Version", version.name, "data", clean, update_modified=False)
			scrubbed += 1
	return scrubbed


def redact(text: str) -> str:
	return URL_PASSWORD.sub(r"\1***\3", text)


def redact_json(text: str) -> str:
	"""Redact every string inside a Version's JSON ``data`` (the raw text if it is not JSON)."""
	if not URL_PASSWORD.search(text):
		return text
	try:
		data = json.loads(text)
	except ValueError:
		return redact(text)
	return json.dumps(_walk(data), indent=1, sort_keys=True, ensure_ascii=False)


def _walk(value: Any) -> Any:
	if isinstance(value, str):
		return redact(value)
	if isinstance(value, list):
		return [_walk(v) for v in value]
	if isinstance(value, dict):
		return {k: _walk(v) for k, v in value.items()}
	return value
