# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.stores.doctype_store import DocTypeStore
from frappe_eda.testing.store_contract import error, incoming

LAYOUT = ("Section Break", "Column Break", "Tab Break", "HTML")


class TestEDAError(FrappeTestCase):
	def tearDown(self):
		frappe.db.rollback()

	def test_an_error_links_to_the_record_of_its_message_and_queue(self):
		store = DocTypeStore(commit=False)
		store.save([incoming("m", "a"), incoming("m", "b")])
		store.add_error(error("m", "b", attempt=2))
		row = frappe.get_all("EDA Error", filters={"message_id": "m"}, fields=["eda_message", "attempt"])[0]
		self.assertEqual(row.attempt, 2)
		self.assertEqual(frappe.db.get_value("EDA Message", row.eda_message, "queue"), "b")

	def test_an_error_before_its_message_is_stored_is_kept_unlinked(self):
		DocTypeStore(commit=False).add_error(error("not-yet", "q"))
		self.assertEqual(frappe.db.get_value("EDA Error", {"message_id": "not-yet"}, "eda_message"), None)

	def test_records_are_written_by_code_and_only_read_in_the_desk(self):
		for doctype in ("EDA Message", "EDA Error"):
			meta = frappe.get_meta(doctype)
			with self.subTest(doctype=doctype):
				self.assertTrue(meta.in_create)
				self.assertFalse(meta.track_changes)
				self.assertFalse(meta.allow_rename)
				editable = [f.fieldname for f in meta.fields if f.fieldtype not in LAYOUT and not f.read_only]
				self.assertEqual(editable, [])
				rights = {p.role: p for p in meta.permissions}
				self.assertTrue(rights["EDA User"].read and rights["EDA User"].report)
				self.assertFalse(rights["EDA User"].write or rights["EDA User"].create)
				self.assertTrue(rights["EDA Manager"].delete and rights["EDA Manager"].export)
