# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import json

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.outbox.payload import document_payload
from frappe_eda.outbox.rules import clear_rules_cache


def outbox(reference_name):
	return frappe.get_all(
		"EDA Message",
		filters={"reference_doctype": "ToDo", "reference_name": reference_name, "direction": "Outgoing"},
		fields=["name", "status", "routing_key", "exchange", "payload", "message_type"],
	)


class TestEDAEventRule(FrappeTestCase):
	def setUp(self):
		frappe.db.set_single_value("EDA Settings", "enabled", 1)
		frappe.get_doc(
			{
				"doctype": "EDA Event Rule",
				"document_type": "ToDo",
				"event": "after_insert",
				"condition": "doc.priority == 'High'",
				"exchange": "erp.events",
				"send_fields": "description, priority",
			}
		).insert()

	def tearDown(self):
		frappe.db.rollback()
		clear_rules_cache()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")

	def test_a_covered_save_writes_one_pending_message_in_the_same_transaction(self):
		todo = frappe.get_doc({"doctype": "ToDo", "description": "ship it", "priority": "High"}).insert()
		[message] = outbox(todo.name)
		self.assertEqual(
			(message.status, message.routing_key, message.exchange),
			("Pending", "todo.after_insert", "erp.events"),
		)
		payload = json.loads(message.payload)["payload"]
		self.assertEqual(
			(payload["description"], payload["priority"], payload["name"]), ("ship it", "High", todo.name)
		)
		self.assertNotIn("status", payload)  # only the fields the rule lists (and the identifying ones)

	def test_a_rolled_back_save_publishes_nothing(self):
		frappe.db.savepoint("before_todo")
		todo = frappe.get_doc({"doctype": "ToDo", "description": "oops", "priority": "High"}).insert()
		self.assertEqual(len(outbox(todo.name)), 1)
		frappe.db.rollback(save_point="before_todo")
		self.assertEqual(outbox(todo.name), [])
		self.assertFalse(frappe.db.exists("ToDo", todo.name))

	def test_the_condition_filters_documents(self):
		todo = frappe.get_doc({"doctype": "ToDo", "description": "later", "priority": "Low"}).insert()
		self.assertEqual(outbox(todo.name), [])

	def test_disabled_settings_publish_nothing(self):
		# ``eda_enabled`` in site_config.json wins over the form; this test is about the form.
		enabled_in_config = frappe.conf.pop("eda_enabled", None)
		try:
			frappe.db.set_single_value("EDA Settings", "enabled", 0)
			frappe.clear_document_cache("EDA Settings", "EDA Settings")
			todo = frappe.get_doc({"doctype": "ToDo", "description": "quiet", "priority": "High"}).insert()
			self.assertEqual(outbox(todo.name), [])
		finally:
			if enabled_in_config is not None:
				frappe.conf["eda_enabled"] = enabled_in_config

	def test_invalid_rules_are_refused(self):
		for values in (
			{"document_type": "ToDo", "event": "on_submit"},
			{"document_type": "ToDo", "event": "on_update", "condition": "doc.priority =="},
			{"document_type": "ToDo", "event": "on_update", "condition": "doc.priorty == 'High'"},
			{"document_type": "ToDo", "event": "on_update", "condition": "priority == 'High'"},
			{"document_type": "ToDo", "event": "on_update", "condition": "doc.__class__"},
			{"document_type": "ToDo", "event": "on_update", "condition": "(x := 1)"},
			{"document_type": "ToDo", "event": "on_update", "send_fields": "no_such_field"},
			{"document_type": "EDA Message", "event": "on_update"},
			{"event": "on_update"},
			{"document_type": "ToDo", "event": "on_update", "routing_key": "{nope}"},
		):
			with self.subTest(values=values), self.assertRaises(frappe.ValidationError):
				frappe.get_doc({"doctype": "EDA Event Rule", **values}).insert()

	def test_conditions_that_only_fail_on_an_empty_document_are_accepted(self):
		for condition in ("doc.date > 1", "doc.owner.lower() == 'x'", "utils.getdate(doc.date).year > 2000"):
			with self.subTest(condition=condition):
				frappe.get_doc(
					{
						"doctype": "EDA Event Rule",
						"document_type": "ToDo",
						"event": "on_update",
						"condition": condition,
					}
				).insert()

	def test_a_disabled_destination_is_refused(self):
		frappe.get_doc(
			{"doctype": "EDA Destination", "destination_name": "rule-test-off", "enabled": 0}
		).insert()
		rule = {"doctype": "EDA Event Rule", "document_type": "ToDo", "destination": "rule-test-off"}
		with self.assertRaises(frappe.ValidationError):
			frappe.get_doc({**rule, "event": "on_update"}).insert()
		frappe.get_doc({**rule, "event": "on_update", "enabled": 0}).insert()

	def test_saving_or_deleting_a_rule_clears_the_cached_rules(self):
		from frappe_eda.outbox.rules import rules_for

		self.assertEqual(len(rules_for("ToDo", "after_insert")), 1)
		rule = frappe.get_doc(
			{"doctype": "EDA Event Rule", "document_type": "ToDo", "event": "after_insert"}
		).insert()
		self.assertEqual(len(rules_for("ToDo", "after_insert")), 2)
		rule.delete()
		self.assertEqual(len(rules_for("ToDo", "after_insert")), 1)


class TestPayload(FrappeTestCase):
	def test_password_fields_never_enter_a_payload(self):
		account = frappe.get_doc(
			{
				"doctype": "Email Account",
				"email_id": "x@example.com",
				"email_account_name": "x",
				"password": "hunter2",
			}
		)
		payload = document_payload(account)
		self.assertNotIn("password", payload)
		self.assertNotIn("hunter2", json.dumps(payload))
		self.assertEqual(payload["email_id"], "x@example.com")
