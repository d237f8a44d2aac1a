# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import frappe
from frappe import _
from frappe.model.document import Document


class EDADestination(Document):
	def validate(self):
		if self.routing_key:
			try:
				self.routing_key.format(type="x")
			except (KeyError, IndexError, ValueError):
				frappe.throw(_("Routing Key may only use the placeholder {type}"))
