"""The ``doc_events["*"]`` hook: a document event that a rule covers becomes an outbox record.

Runs inside the document's own transaction, so the record commits or rolls back with the document.
Data Import publishes (a rule may opt out with *Skip Imports*); patches publish only for rules that say
*Publish In Patches*; installs and migrations publish nothing. ``on_change`` is published only when it
is not the end of a save (``db_set``, which fires no other event), ``after_rename`` with the old and new
names (``frappe_eda.replication.apply`` renames the copy). EDA's own DocTypes never publish, which
would loop; nor does a copy that an EDA Subscription writes, unless the subscription says so (and then
its message keeps the change's origin, which never applies it again). A rule whose target cannot work
(a disabled or missing destination, a bad template) or whose message cannot be sent (a document over
the 1 MiB consumers accept) never fails the save: the message is recorded Failed and managers told.
"""

from __future__ import annotations

from typing import Any

import frappe

from frappe_eda.consumer.written import note_written
from frappe_eda.messaging.errors import ConfigurationError, InvalidMessage, Unsendable
from frappe_eda.outbox import publish
from frappe_eda.outbox.linked import linked_documents
from frappe_eda.outbox.payload import document_payload
from frappe_eda.outbox.rules import PublishRule, routing_key_for, rules_for
from frappe_eda.outbox.unsendable import record_unsendable
from frappe_eda.replication.content import HASH_KEY, document_hash

LINKS_KEY = "_eda_links"  # read by frappe_eda.replication.apply
RENAME_KEY = "_eda_rename"  # {"old", "new", "merge"} of an after_rename
CHANGED_KEY = "_eda_changed"  # the fields an on_change (db_set) changed
OWN_DOCTYPES = frozenset(
	{
		"EDA Message",
		"EDA Error",
		"EDA Settings",
		"EDA Event Rule",
		"EDA Destination",
		"EDA Subscription",
		"EDA Replica",
		"EDA Receipt",
		"EDA Worker",
	}
)


def on_document_event(doc: Any, method: str, *args: Any, **kwargs: Any) -> None:
	"""Frappe passes ``after_rename`` its old and new names and ``merge`` (``*args``)."""
	flags = frappe.local.flags
	if flags.in_install or (flags.in_migrate and not flags.in_patch):
		return
	if doc.doctype in OWN_DOCTYPES or (getattr(doc, "meta", None) and doc.meta.istable):
		return
	note_written(doc, method)  # in the worker: the incoming message's reference (consumer.written)
	if flags.eda_applying and not flags.eda_applying_publishes:
		return  # a copy an EDA Subscription wrote: no echo (frappe_eda.replication.apply)
	if method == "on_change" and _in_save(doc):
		if rules_for(doc.doctype, "on_change"):
			doc.flags.eda_values = _values(doc)  # what a later db_set of this object is compared with
		return  # the on_change that ends every save: the save's own event covers it; db_set's does not
	rules = rules_for(doc.doctype, method)
	if not rules:
		return
	from frappe_eda.settings import load_outbox_settings

	if not load_outbox_settings().enabled:
		return
	extra = _event_details(doc, method, args)
	for rule in rules:
		if flags.in_import and rule.skip_imports:
			continue
		if flags.in_patch and not rule.in_patches:
			continue
		if rule.condition and not _condition_holds(rule, doc):
			continue
		publish_document(doc, rule, extra=extra)


def _in_save(doc: Any) -> bool:
	"""Inside ``insert``/``save`` of ``doc`` (its hooks, the ``on_change`` ending it). A save is in
	``flags.currently_saving``; an insert is there only under the name it had before naming (None when
	autonamed), so its ending ``on_change`` is told by ``flags.in_insert``, which Frappe sets around
	the insert's post-save methods."""
	return bool(doc.flags.in_insert) or (doc.doctype, doc.name) in (frappe.local.flags.currently_saving or ())


def _event_details(doc: Any, method: str, args: tuple[Any, ...]) -> dict[str, Any]:
	"""What a subscriber needs beyond the document: the names of a rename, the fields a db_set changed."""
	if method == "after_rename" and len(args) >= 2:
		return {
			RENAME_KEY: {
				"old": str(args[0]),
				"new": str(args[1]),
				"merge": bool(args[2] if len(args) > 2 else False),
			}
		}
	if method == "on_change":
		# Compared with the object's values after its last save or db_set, when this request has them:
		# db_set keeps the document-before-save of an earlier save (and of an earlier db_set) and does
		# not reload it, and a just-inserted document holds values as given ("2026-01-01", not a date).
		# Otherwise with the row db_set loaded before writing.
		before = doc.flags.eda_values
		if before is None and doc.get_doc_before_save() is not None:
			before = _values(doc.get_doc_before_save())
		doc.flags.eda_values = _values(doc)
		if before is not None:
			return {CHANGED_KEY: [f for f, value in doc.flags.eda_values.items() if value != before.get(f)]}
	return {}


def _values(doc: Any) -> dict[str, Any]:
	return {
		df.fieldname: doc.get(df.fieldname)
		for df in doc.meta.fields
		if df.fieldtype not in frappe.model.table_fields and df.fieldtype not in frappe.model.no_value_fields
	}


def publish_document(doc: Any, rule: PublishRule, extra: dict[str, Any] | None = None) -> None:
	"""Queue the message ``rule`` makes of ``doc``; a target that cannot work is recorded, not raised."""
	payload = document_payload(doc, rule.fields)
	payload.update(extra or {})
	if rule.send_linked:
		payload[LINKS_KEY] = linked_documents(doc)
	if rule.event != "on_trash":  # what reconciliation compares (frappe_eda.replication.content)
		payload[HASH_KEY] = document_hash(doc.doctype, doc.name, rule.fields)
	message_type = f"{frappe.scrub(doc.doctype)}.{rule.event}"
	try:
		routing_key = None
		if rule.routing_key or not rule.destination:
			routing_key = routing_key_for(rule, doc)
		publish(
			message_type,
			payload,
			to=rule.destination or None,
			exchange=rule.exchange or None,
			routing_key=routing_key,
			reference_doctype=doc.doctype,
			reference_name=doc.name,
		)
	except (ConfigurationError, Unsendable, InvalidMessage) as e:  # a disabled destination, a bad template,
		# a document too large for consumers, a key longer than the columns hold
		record_unsendable(
			message_type,
			payload,
			e,
			exchange=rule.exchange or None,
			reference_doctype=doc.doctype,
			reference_name=doc.name,
		)


def _condition_holds(rule: PublishRule, doc: Any) -> bool:
	from frappe_eda.outbox.conditions import condition_holds

	return condition_holds(rule.condition, doc)
