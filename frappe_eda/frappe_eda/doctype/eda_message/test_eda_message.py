# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.stores.doctype_store import DocTypeStore
from frappe_eda.testing.store_contract import StoreContract


class TestDocTypeStoreContract(StoreContract, FrappeTestCase):
	"""The core's store contract, on EDA Message / EDA Error in this site.

	The store runs with ``commit=False`` (the test owns the transaction) and every test is rolled back.
	"""

	def make_store(self):
		frappe.db.rollback()
		return DocTypeStore(commit=False)

	def cleanup_store(self, store):
		frappe.db.rollback()


class TestEDAMessage(FrappeTestCase):
	def tearDown(self):
		frappe.db.rollback()

	def test_the_message_key_is_unique(self):
		values = {
			"doctype": "EDA Message",
			"message_id": "dup-1",
			"direction": "Incoming",
			"status": "Processed",
			"queue": "q",
		}
		frappe.get_doc(values).db_insert()
		with self.assertRaises(frappe.UniqueValidationError):
			frappe.get_doc(values).db_insert()

	def test_log_settings_retention_keeps_failed_and_dead(self):
		from frappe_eda.frappe_eda.doctype.eda_message.eda_message import EDAMessage

		old = "2020-01-01 00:00:00"
		for status in ("Processed", "Published", "Dead", "Failed"):
			frappe.get_doc(
				{
					"doctype": "EDA Message",
					"message_id": f"old-{status}",
					"direction": "Incoming",
					"status": status,
					"queue": "q",
					"updated_at": old,
					"created_at": old,
				}
			).db_insert()
		self.assertEqual(EDAMessage.clear_old_logs(days=30), 2)
		left = frappe.get_all("EDA Message", filters={"message_id": ["like", "old-%"]}, pluck="status")
		self.assertEqual(sorted(left), ["Dead", "Failed"])
