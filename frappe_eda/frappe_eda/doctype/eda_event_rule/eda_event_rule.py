# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import frappe
from frappe import _
from frappe.model.document import Document

from frappe_eda.outbox.doc_events import OWN_DOCTYPES
from frappe_eda.outbox.rules import clear_rules_cache


class EDAEventRule(Document):
	def validate(self):
		if self.document_type in OWN_DOCTYPES:
			frappe.throw(_("EDA's own DocTypes cannot publish events"))
		meta = frappe.get_meta(self.document_type)
		if meta.istable:
			frappe.throw(_("{0} is a child table; publish its parent instead").format(self.document_type))
		if self.event in ("on_submit", "on_cancel", "on_update_after_submit") and not meta.is_submittable:
			frappe.throw(
				_("{0} is not submittable, so {1} never happens").format(self.document_type, self.event)
			)
		if self.condition:
			try:
				compile(self.condition, "<condition>", "eval")
			except SyntaxError as e:
				frappe.throw(_("Condition is not a valid Python expression: {0}").format(e.msg))
		unknown = [f for f in self.field_list() if not meta.has_field(f) and f not in ("name", "docstatus")]
		if unknown:
			frappe.throw(_("{0} has no fields {1}").format(self.document_type, ", ".join(unknown)))
		if self.routing_key:
			try:
				self.routing_key.format(doctype="x", event="y", name="z")
			except (KeyError, IndexError, ValueError):
				frappe.throw(_("Routing Key may only use {doctype}, {event} and {name}"))

	def field_list(self):
		return [f.strip() for f in (self.send_fields or "").replace("\n", ",").split(",") if f.strip()]

	def on_update(self):
		clear_rules_cache()

	def on_trash(self):
		clear_rules_cache()
