"""Which documents publish what: desk-configured EDA Event Rules plus ``eda_publish`` hooks of apps.

Rules are read once and cached (cleared when a rule changes), like Frappe's own Webhook. An app
declares publishing in its hooks.py::

    eda_publish = {
        "Sales Order": [
            {
                "event": "on_submit",
                "routing_key": "sales_order.submitted",
                "to": "procurement",
                "fields": ["customer", "items", "grand_total"],
                "condition": "doc.grand_total > 0",
            },
        ],
    }
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import frappe

RULES_CACHE_KEY = "eda_event_rules"
DOC_EVENTS = ("after_insert", "on_update", "on_submit", "on_cancel", "on_trash", "on_update_after_submit")


@dataclass(frozen=True)
class PublishRule:
	doctype: str
	event: str
	routing_key: str = ""
	exchange: str = ""
	destination: str = ""
	fields: tuple[str, ...] = ()
	condition: str = ""
	rule: str = ""  # the EDA Event Rule's name, when it came from the desk


def rules_for(doctype: str, event: str) -> list[PublishRule]:
	return [r for r in all_rules().get(doctype, []) if r.event == event]


def all_rules() -> dict[str, list[PublishRule]]:
	return frappe.cache.get_value(RULES_CACHE_KEY, _load_rules)


def clear_rules_cache() -> None:
	frappe.cache.delete_value(RULES_CACHE_KEY)


def _load_rules() -> dict[str, list[PublishRule]]:
	rules: dict[str, list[PublishRule]] = {}
	for row in frappe.get_all(
		"EDA Event Rule",
		filters={"enabled": 1},
		fields=[
			"name",
			"document_type",
			"event",
			"condition",
			"destination",
			"exchange",
			"routing_key",
			"send_fields",
		],
	):
		rules.setdefault(row.document_type, []).append(
			PublishRule(
				doctype=row.document_type,
				event=row.event,
				routing_key=row.routing_key or "",
				exchange=row.exchange or "",
				destination=row.destination or "",
				fields=_split(row.send_fields),
				condition=row.condition or "",
				rule=row.name,
			)
		)
	for declared in frappe.get_hooks("eda_publish") or []:
		for doctype, specs in _hook_items(declared):
			for spec in specs:
				rules.setdefault(doctype, []).append(_from_hook(doctype, spec))
	return rules


def _hook_items(declared: Any) -> list[tuple[str, list[dict[str, Any]]]]:
	if not isinstance(declared, dict):
		return []
	return [(doctype, specs if isinstance(specs, list) else [specs]) for doctype, specs in declared.items()]


def _from_hook(doctype: str, spec: dict[str, Any]) -> PublishRule:
	event = spec.get("event", "on_update")
	if event not in DOC_EVENTS:
		frappe.throw(f"eda_publish for {doctype}: event {event!r} is not one of {', '.join(DOC_EVENTS)}")
	fields = spec.get("fields") or ()
	return PublishRule(
		doctype=doctype,
		event=event,
		routing_key=spec.get("routing_key", ""),
		exchange=spec.get("exchange", ""),
		destination=spec.get("to", ""),
		fields=tuple(_split(fields) if isinstance(fields, str) else fields),
		condition=spec.get("condition", ""),
	)


def _split(text: str | None) -> tuple[str, ...]:
	return tuple(part.strip() for part in (text or "").replace("\n", ",").split(",") if part.strip())


def routing_key_for(rule: PublishRule, doc: Any, template: str = "") -> str:
	"""``{doctype}.{event}`` style templates; doctype is scrubbed (``sales_order``)."""
	pattern = rule.routing_key or template or "{doctype}.{event}"
	return pattern.format(doctype=frappe.scrub(doc.doctype), event=rule.event, name=doc.name)
