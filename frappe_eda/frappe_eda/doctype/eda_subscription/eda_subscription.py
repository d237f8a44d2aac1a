# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""An EDA Subscription: which replicated documents this site applies, and how (frappe_eda.replication).

The controller only validates what the desk can get wrong and tells running workers to reload; applying
lives in ``frappe_eda.replication.apply``."""

import frappe
from frappe import _
from frappe.model.document import Document

from frappe_eda.messaging.replication.mapping import FieldAction
from frappe_eda.replication import NEVER_WRITTEN
from frappe_eda.replication.subscriptions import (
	bump_version,
	default_queue,
	follow_queue,
	patterns_of,
	retire_queue,
)


class EDASubscription(Document):
	def validate(self):
		self.document_type = self.document_type or self.source_doctype
		self.queue = (self.queue or "").strip() or default_queue(self.subscription_name or self.name)
		self._check_document_type()
		self._check_patterns()
		self._check_key_field()
		self._check_rules()
		self._check_sender()

	def on_update(self):
		bump_version()
		follow_queue(self)

	def on_trash(self):
		bump_version()
		retire_queue(self)

	def _check_document_type(self):
		from frappe_eda.outbox.doc_events import OWN_DOCTYPES

		meta = frappe.get_meta(self.document_type)
		if meta.istable or self.document_type in OWN_DOCTYPES or self.document_type in NEVER_WRITTEN:
			frappe.throw(
				_(
					"{0} cannot be written by a subscription: choose a DocType that is not a child table, not a system DocType and not one of EDA's own"
				).format(frappe.bold(frappe.utils.escape_html(self.document_type))),
				title=_("Invalid Local Document Type"),
			)
		if meta.issingle:
			frappe.throw(
				_("A Single DocType has no documents to replicate"), title=_("Invalid Local Document Type")
			)

	def _check_patterns(self):
		patterns = patterns_of(self.routing_key_patterns)
		if not patterns:
			frappe.throw(_("Give at least one routing key pattern, such as item.*"))
		for pattern in patterns:
			if len(pattern) > 255 or any(c.isspace() for c in pattern):
				frappe.throw(
					_(
						"Routing key pattern {0} is not a topic pattern (no spaces, at most 255 characters)"
					).format(frappe.bold(frappe.utils.escape_html(pattern[:80])))
				)

	def _check_key_field(self):
		if self.match_by != "Key Field":
			return
		if not self.key_field or not frappe.get_meta(self.document_type).has_field(self.key_field):
			frappe.throw(
				_("Key Field {0} is not a field of {1}").format(
					frappe.bold(frappe.utils.escape_html(self.key_field or "")),
					frappe.utils.escape_html(self.document_type),
				)
			)

	def _check_sender(self):
		from frappe_eda.messaging.errors import ConfigurationError
		from frappe_eda.messaging.trust import KeyRing
		from frappe_eda.replication.subscriptions import PROVEN

		self.source = (self.source or "").strip()
		if (self.sender_check or PROVEN) == PROVEN and not self.source:
			frappe.throw(
				_(
					"Sender Check {0} needs the Source Server: the site name of the server whose broker user may send to this subscription"
				).format(frappe.bold(PROVEN)),
				title=_("Missing Source Server"),
			)
		try:
			KeyRing.parse_or_none(self.source_public_keys)
		except ConfigurationError as e:
			frappe.throw(
				_("Source Public Keys: {0}").format(frappe.utils.escape_html(str(e))),
				title=_("Invalid Public Key"),
			)

	def _check_rules(self):
		for row in self.field_rules or []:
			action = FieldAction(row.action or "Map")
			if action in (FieldAction.MAP, FieldAction.SKIP) and not (row.source_field or "").strip():
				frappe.throw(_("Row {0}: a {1} rule needs a Source Field").format(row.idx, action.value))
			if action in (FieldAction.DEFAULT, FieldAction.CONSTANT) and not (
				(row.target_field or "").strip() or (row.source_field or "").strip()
			):
				frappe.throw(_("Row {0}: a {1} rule needs a Local Field").format(row.idx, action.value))
