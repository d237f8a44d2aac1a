# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.outbox import resolve_destination


class TestEDADestination(FrappeTestCase):
	def tearDown(self):
		frappe.db.rollback()

	def test_destination_names_exchange_and_routing_key(self):
		frappe.get_doc(
			{
				"doctype": "EDA Destination",
				"destination_name": "procurement",
				"exchange": "erp.procurement",
				"routing_key": "erp.{type}",
			}
		).insert()
		self.assertEqual(
			resolve_destination("procurement", None, None, "purchase_order.submitted", "eda.events"),
			("erp.procurement", "erp.purchase_order.submitted"),
		)

	def test_unknown_placeholders_are_refused(self):
		with self.assertRaises(frappe.ValidationError):
			frappe.get_doc(
				{"doctype": "EDA Destination", "destination_name": "bad", "routing_key": "{doctype}"}
			).insert()
