# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import frappe
from frappe import _
from frappe.model.document import Document

from frappe_eda.messaging.errors import InvalidRoutingKeyTemplate
from frappe_eda.messaging.templates import check_template

# What a destination's routing-key template may use (rendered by frappe_eda.outbox.resolve_destination).
DESTINATION_PLACEHOLDERS = ("type",)


class EDADestination(Document):
	def validate(self):
		if self.routing_key:
			try:
				check_template(self.routing_key, DESTINATION_PLACEHOLDERS)
			except InvalidRoutingKeyTemplate as e:
				frappe.throw(frappe.utils.escape_html(str(e)), title=_("Invalid Routing Key"))

	def on_update(self):
		from frappe_eda.replication.queues import follow_receipts

		before = self.get_doc_before_save()
		if before is None or (before.enabled, before.request_receipts) != (
			self.enabled,
			self.request_receipts,
		):
			follow_receipts()  # only when whether it asks for receipts changed

	def on_trash(self):
		from frappe_eda.replication.queues import follow_receipts

		follow_receipts(without=self.name)
