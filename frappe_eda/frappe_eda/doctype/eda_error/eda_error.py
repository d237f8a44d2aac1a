# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import frappe
from frappe.model.document import Document


class EDAError(Document):
	"""Written by the store; read in the desk. Behaviour lives in frappe_eda.desk."""


def on_doctype_update():
	frappe.db.add_index("EDA Error", ["message_id", "queue"], index_name="message_queue")
