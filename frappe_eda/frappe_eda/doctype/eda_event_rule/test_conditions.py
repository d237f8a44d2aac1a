# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""What a rule's condition may use (frappe_eda.outbox.conditions), through real saves: a desk ToDo keeps
its description as HTML, so a condition on its text needs strip_html; and Try Condition on the form,
which says what would be sent and sends nothing."""

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.frappe_eda.doctype.eda_event_rule.test_eda_event_rule import outbox
from frappe_eda.outbox.conditions import try_rule
from frappe_eda.outbox.rules import clear_rules_cache

HTML = '<div class="ql-editor read-mode"><p>WH1: count the chairs</p></div>'


class TestConditions(FrappeTestCase):
	def setUp(self):
		frappe.db.set_single_value("EDA Settings", "enabled", 1)
		self.prefix = f"eda-cond-{frappe.generate_hash(length=6)}"

	def tearDown(self):
		frappe.db.rollback()
		clear_rules_cache()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")

	def rule(self, condition, **values):
		doc = frappe.get_doc(
			{
				"doctype": "EDA Event Rule",
				"document_type": "ToDo",
				"event": "after_insert",
				"condition": condition,
				"routing_key": f"{self.prefix}.{{doctype}}.{{event}}",
				**values,
			}
		).insert()
		clear_rules_cache()
		return doc

	def test_html_in_a_text_editor_field_needs_strip_html_and_every_spelling_of_it_works(self):
		plain = self.rule('doc.description.startswith("WH1:")')
		todo = frappe.get_doc({"doctype": "ToDo", "description": HTML}).insert()
		self.assertEqual(outbox(todo.name), [])  # the trap the README warns about
		plain.delete()
		for condition in (
			'strip_html(doc.description).startswith("WH1:")',
			'frappe.utils.strip_html(doc.description).startswith("WH1:")',
			'utils.strip_html(doc.description).startswith("WH1:") and utils.getdate("2026-01-02").day == 2',
			'utils.cint(utils.flt("2.0")) == 2 and strip_html(doc.description)[:4] == "WH1:"',
		):
			rule = self.rule(condition)
			todo = frappe.get_doc({"doctype": "ToDo", "description": HTML}).insert()
			self.assertEqual(len(outbox(todo.name)), 1, condition)
			rule.delete()

	def test_an_unknown_name_is_refused_with_the_names_a_condition_may_use(self):
		with self.assertRaisesRegex(frappe.ValidationError, "may use doc, utils"):
			self.rule("frappe.db.get_value('User', 'Administrator', 'name')")
		with self.assertRaisesRegex(frappe.ValidationError, "may use doc, utils"):
			self.rule("json.dumps(doc)")

	def test_try_condition_says_what_would_be_sent_and_sends_nothing(self):
		frappe.get_doc(
			{
				"doctype": "EDA Destination",
				"destination_name": f"{self.prefix} wh1",
				"routing_key": "wh1.{type}",
				"target_servers": "wh1.example.com",
			}
		).insert()
		rule = self.rule(
			'strip_html(doc.description).startswith("WH1:")',
			routing_key="",
			destination=f"{self.prefix} wh1",
			send_fields="description",
		)
		rule.db_set("enabled", 0)  # so that the saves below publish nothing of their own
		clear_rules_cache()
		yes = frappe.get_doc({"doctype": "ToDo", "description": HTML}).insert()
		no = frappe.get_doc({"doctype": "ToDo", "description": "<p>WH2: elsewhere</p>"}).insert()
		before = frappe.db.count("EDA Message")
		tried = try_rule(rule.name, yes.name)
		self.assertIsNone(tried["error"])
		self.assertTrue(tried["holds"])
		self.assertEqual(tried["routing_key"], "wh1.todo.after_insert")
		self.assertEqual(tried["target_servers"], ["wh1.example.com"])
		self.assertEqual(tried["payload"]["description"], HTML)
		self.assertNotIn("priority", tried["payload"])  # only Send Fields (and the identifying ones)
		self.assertFalse(try_rule(rule.name, no.name)["holds"])
		self.assertEqual(frappe.db.count("EDA Message"), before)
		broken = self.rule("doc.description > 3", routing_key="")
		self.assertIn("TypeError", try_rule(broken.name, yes.name)["error"])

	def test_try_condition_is_for_managers_who_may_read_the_document(self):
		rule = self.rule("1")
		todo = frappe.get_doc({"doctype": "ToDo", "description": "x"}).insert()
		frappe.set_user("Guest")
		try:
			with self.assertRaises(frappe.PermissionError):
				try_rule(rule.name, todo.name)
		finally:
			frappe.set_user("Administrator")
