"""Which documents publish what: desk-configured EDA Event Rules plus ``eda_publish`` hooks of apps.

Rules are read once and cached (cleared when a rule changes), like Frappe's own Webhook. An app
declares publishing in its hooks.py (a list of specs per DocType)::

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

Frappe merges a dict-valued hook of every installed app into one dict, key by key, concatenating the
lists (``frappe.append_hook``): ``frappe.get_hooks("eda_publish")`` is ``{"Sales Order": [spec, spec,
...]}``, the specs of all apps together. A spec given as a bare dict instead of a list of one is merged
by Frappe field by field (``{"event": ["on_submit"], ...}``); one app's is read back, several apps'
cannot be told apart and are skipped. An entry that cannot work (not a dict, an unknown event, fields
that are not a list of names) is logged and skipped: another app's mistake never fails a save.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import frappe

from frappe_eda.messaging.templates import render_template
from frappe_eda.setup.readiness import eda_tables_exist

log = logging.getLogger(__name__)

RULES_CACHE_KEY = "eda_event_rules"
RULES_TTL_SECONDS = 600
DOC_EVENTS = (
	"after_insert",
	"on_update",
	"on_submit",
	"on_cancel",
	"on_trash",
	"on_update_after_submit",
	"on_change",
	"after_rename",
)


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
	send_linked: bool = False  # add the linked documents (frappe_eda.outbox.linked)
	skip_imports: bool = False  # Data Import publishes unless the rule opts out
	in_patches: bool = False  # patches publish only when the rule says so


def rules_for(doctype: str, event: str) -> list[PublishRule]:
	return [r for r in all_rules().get(doctype, []) if r.event == event]


def all_rules() -> dict[str, list[PublishRule]]:
	"""From the request's own cache, else Redis, else the database and hooks. Saving or deleting a rule
	clears the cache at once (``clear_rules_cache``), as ``bench clear-cache`` and migrate do; the
	expiry is the safety net for what changes without either, such as hooks of a redeployed app.

	Before EDA's tables exist (``setup.readiness``) there are no rules, and nothing is cached in Redis,
	so the rules load as soon as ``migrate`` has created them."""
	key = frappe.cache.make_key(RULES_CACHE_KEY)
	if key in frappe.local.cache:
		return frappe.local.cache[key]
	rules = frappe.cache.get_value(RULES_CACHE_KEY, expires=True)
	if rules is None:
		if not eda_tables_exist():
			frappe.local.cache[key] = {}
			return {}
		rules = _load_rules()
		frappe.cache.set_value(RULES_CACHE_KEY, rules, expires_in_sec=RULES_TTL_SECONDS)
	frappe.local.cache[key] = rules
	return rules


def clear_rules_cache() -> None:
	frappe.cache.delete_value(RULES_CACHE_KEY)


def _load_rules() -> dict[str, list[PublishRule]]:
	rules: dict[str, list[PublishRule]] = {}
	# During bench migrate a patch may save documents before the DocType's new columns exist: read only
	# the columns the table has (a missing one reads as its default).
	existing = set(frappe.db.get_table_columns("EDA Event Rule"))
	for row in frappe.get_all(
		"EDA Event Rule",
		filters={"enabled": 1},
		fields=[
			column
			for column in (
				"name",
				"document_type",
				"event",
				"condition",
				"destination",
				"exchange",
				"routing_key",
				"send_fields",
				"send_linked",
				"skip_imports",
				"publish_in_patches",
			)
			if column in existing
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
				send_linked=bool(row.get("send_linked")),
				skip_imports=bool(row.get("skip_imports")),
				in_patches=bool(row.get("publish_in_patches")),
			)
		)
	for rule in hook_rules(frappe.get_hooks("eda_publish")):
		rules.setdefault(rule.doctype, []).append(rule)
	return rules


class _BadHookEntry(ValueError):
	"""One ``eda_publish`` entry that cannot work; reported and skipped, never raised into a save."""


def hook_rules(declared: Any) -> list[PublishRule]:
	"""The rules in ``frappe.get_hooks("eda_publish")`` as Frappe merged it; bad entries are reported."""
	if not declared:
		return []
	if not isinstance(declared, dict):
		_report(f"eda_publish is a {type(declared).__name__}, not a dict of DocType -> list of specs")
		return []
	rules = []
	for doctype, specs in declared.items():
		try:
			entries = _specs(doctype, specs)
		except _BadHookEntry as e:
			_report(f"eda_publish for {doctype!r}: {e}; its entries are skipped")
			continue
		for spec in entries:
			try:
				rules.append(_from_hook(doctype, spec))
			except _BadHookEntry as e:
				_report(f"eda_publish for {doctype!r}: {e}; this entry is skipped")
	return rules


def _specs(doctype: Any, specs: Any) -> list[Any]:
	"""A list of specs, or the field-by-field merge Frappe makes of bare dict specs (see the module)."""
	if not isinstance(doctype, str) or not doctype:
		raise _BadHookEntry(f"the key {doctype!r} is not a DocType name")
	if isinstance(specs, list):
		return specs
	if isinstance(specs, dict) and specs and all(isinstance(v, list) for v in specs.values()):
		if any(len(values) != 1 for key, values in specs.items() if key != "fields"):
			raise _BadHookEntry(
				f"several apps gave a bare dict spec, which Frappe merged field by field ({specs!r}); "
				"give each app's specs as a list of dicts"
			)
		return [{key: values if key == "fields" else values[0] for key, values in specs.items()}]
	return [specs]


def _from_hook(doctype: str, spec: Any) -> PublishRule:
	if not isinstance(spec, dict):
		raise _BadHookEntry(f"a spec is a {type(spec).__name__} ({spec!r}), not a dict")
	event = spec.get("event", "on_update")
	if event not in DOC_EVENTS:
		raise _BadHookEntry(f"event {event!r} is not one of {', '.join(DOC_EVENTS)}")
	fields = spec.get("fields") or ()
	if isinstance(fields, str):
		fields = [fields]
	if not isinstance(fields, list | tuple) or not all(isinstance(f, str) for f in fields):
		raise _BadHookEntry(f"fields is {fields!r}; give a list of field names")
	fields = [name for text in fields for name in _split(text)]
	texts = {key: spec.get(key) or "" for key in ("routing_key", "exchange", "to", "condition")}
	wrong = [key for key, value in texts.items() if not isinstance(value, str)]
	if wrong:
		raise _BadHookEntry(f"{', '.join(wrong)} must be text")
	return PublishRule(
		doctype=doctype,
		event=event,
		routing_key=texts["routing_key"],
		exchange=texts["exchange"],
		destination=texts["to"],
		fields=tuple(fields),
		condition=texts["condition"],
		send_linked=bool(spec.get("send_linked")),
		skip_imports=bool(spec.get("skip_imports")),
		in_patches=bool(spec.get("publish_in_patches")),
	)


def _report(problem: str) -> None:
	"""Logged, and kept in the desk's Error Log for whoever installs the apps; the save goes on."""
	log.error(problem)
	try:
		# Deferred: written outside the user's transaction, and not through doc events, which would
		# load these rules again from inside their own loading.
		frappe.log_error(
			title="frappe_eda: eda_publish hook entry skipped", message=problem, defer_insert=True
		)
	except Exception:
		log.exception("could not write the Error Log for a bad eda_publish entry")


def _split(text: str | None) -> tuple[str, ...]:
	return tuple(part.strip() for part in (text or "").replace("\n", ",").split(",") if part.strip())


DEFAULT_ROUTING_KEY = "{doctype}.{event}"
RULE_PLACEHOLDERS = ("doctype", "event", "name")  # what a rule's routing-key template may name


def routing_key_for(rule: PublishRule, doc: Any, template: str = "") -> str:
	"""``{doctype}.{event}`` style templates (doctype scrubbed: ``sales_order``), rendered with the plain
	placeholders only: a template from a hook or an older rule is checked here, not just in the form
	(``InvalidRoutingKeyTemplate``, a ``ConfigurationError``)."""
	pattern = rule.routing_key or template or DEFAULT_ROUTING_KEY
	return render_template(pattern, doctype=frappe.scrub(doc.doctype), event=rule.event, name=str(doc.name))
