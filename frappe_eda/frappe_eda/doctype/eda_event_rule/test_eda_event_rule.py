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
		frappe.db.set_single_value("EDA Settings", "enabled", 0)
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		todo = frappe.get_doc({"doctype": "ToDo", "description": "quiet", "priority": "High"}).insert()
		self.assertEqual(outbox(todo.name), [])

	def test_invalid_rules_are_refused(self):
		for values in (
			{"document_type": "ToDo", "event": "on_submit"},
			{"document_type": "ToDo", "event": "on_update", "condition": "doc.priority =="},
			{"document_type": "ToDo", "event": "on_update", "send_fields": "no_such_field"},
			{"document_type": "EDA Message", "event": "on_update"},
			{"document_type": "ToDo", "event": "on_update", "routing_key": "{nope}"},
		):
			with self.subTest(values=values), self.assertRaises(frappe.ValidationError):
				frappe.get_doc({"doctype": "EDA Event Rule", **values}).insert()


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
