# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import frappe
from frappe import _
from frappe.model.document import Document

from frappe_eda.messaging.errors import InvalidRoutingKeyTemplate
from frappe_eda.messaging.templates import check_template
from frappe_eda.outbox.doc_events import OWN_DOCTYPES
from frappe_eda.outbox.rules import RULE_PLACEHOLDERS, clear_rules_cache

SUBMIT_EVENTS = ("on_submit", "on_cancel", "on_update_after_submit")


class EDAEventRule(Document):
	def validate(self):
		if not self.document_type:
			return  # the mandatory check that follows says so
		if self.document_type in OWN_DOCTYPES:
			frappe.throw(_("EDA's own DocTypes cannot publish events"))
		meta = frappe.get_meta(self.document_type)
		if meta.istable:
			frappe.throw(_("{0} is a child table; publish its parent instead").format(self.document_type))
		if self.event in SUBMIT_EVENTS and not meta.is_submittable:
			frappe.throw(
				_("{0} is not submittable, so {1} never happens").format(self.document_type, self.event)
			)
		if self.condition:
			self.validate_condition()
		unknown = [f for f in self.field_list() if not meta.has_field(f) and f not in ("name", "docstatus")]
		if unknown:
			frappe.throw(_("{0} has no fields {1}").format(self.document_type, ", ".join(unknown)))
		if self.routing_key:
			try:
				check_template(self.routing_key, RULE_PLACEHOLDERS)
			except InvalidRoutingKeyTemplate as e:
				frappe.throw(frappe.utils.escape_html(str(e)), title=_("Invalid Routing Key"))
		if self.enabled and self.destination:
			if not frappe.db.get_value("EDA Destination", self.destination, "enabled"):
				# publish() refuses a disabled destination, which would fail every save of the document
				frappe.throw(_("EDA Destination {0} is disabled").format(self.destination))

	def validate_condition(self):
		"""Evaluated as the outbox will (frappe.safe_eval) on an empty document, like Webhook does.

		Only mistakes in the expression itself are refused: bad syntax, names that do not exist and
		fields the document does not have. Anything else (``None > 1000``) is a property of the empty
		document, not of the condition.
		"""
		from frappe_eda.outbox.conditions import FrappeInCondition, condition_holds

		doc = frappe.new_doc(self.document_type)
		try:
			condition_holds(self.condition, doc)
		except SyntaxError as e:
			frappe.throw(_("Condition is not a valid expression: {0}").format(e))
		except NameError as e:
			frappe.throw(
				_(
					"Condition uses an unknown name: {0}. A condition may use doc, utils (strip_html, getdate, flt, ...), frappe.utils and strip_html"
				).format(frappe.utils.escape_html(str(e)))
			)
		except AttributeError as e:
			if e.obj is doc:
				frappe.throw(_("{0} has no field {1}").format(self.document_type, e.name))
			if isinstance(e.obj, FrappeInCondition):
				frappe.throw(
					_(
						"Condition uses frappe.{0}: a condition may use doc, utils (strip_html, getdate, flt, ...), frappe.utils and strip_html"
					).format(frappe.utils.escape_html(str(e.name)))
				)
		except Exception:
			pass

	def field_list(self):
		return [f.strip() for f in (self.send_fields or "").replace("\n", ",").split(",") if f.strip()]

	def on_update(self):
		clear_rules_cache()

	def on_trash(self):
		clear_rules_cache()
