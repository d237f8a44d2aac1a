# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Issue #10 item 5: "where was this document sent, and did it arrive?" answered on the document: the
EDA Messages that name it (sent from it, or received and written into it by a handler), read with the
user's permissions. Through the real outbox, worker and broker."""

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda import publish
from frappe_eda.desk.api import document_messages
from frappe_eda.tests.test_worker_handlers import WorkerCase

PLAIN_USER = "eda-tracking-plain@example.com"


class TestDocumentMessages(FrappeTestCase):
	def setUp(self):
		self.todo = frappe.get_doc({"doctype": "ToDo", "description": "tracked"}).insert()

	def tearDown(self):
		frappe.set_user("Administrator")
		frappe.db.rollback()

	def test_outgoing_messages_of_a_document_newest_first_with_counts(self):
		for key in ("tracked.one", "tracked.two"):
			publish(key, {"n": key}, reference_doctype="ToDo", reference_name=self.todo.name)
		publish("elsewhere", {}, reference_doctype="ToDo", reference_name="not-this-one")
		result = document_messages("ToDo", self.todo.name)
		self.assertEqual([m.routing_key for m in result["messages"]], ["tracked.two", "tracked.one"])
		self.assertEqual(
			[(c.direction, c.status, c.count) for c in result["counts"]], [("Outgoing", "Pending", 2)]
		)
		self.assertFalse(result["more"])

	def test_a_user_who_may_not_read_the_document_is_refused_and_one_without_eda_roles_sees_none(self):
		publish("tracked.secret", {}, reference_doctype="ToDo", reference_name=self.todo.name)
		_plain_user()
		frappe.set_user(PLAIN_USER)
		with self.assertRaises(frappe.PermissionError):
			document_messages("ToDo", self.todo.name)  # an Administrator's private ToDo
		mine = frappe.get_doc({"doctype": "ToDo", "description": "mine", "allocated_to": PLAIN_USER}).insert()
		frappe.set_user("Administrator")
		publish("tracked.mine", {}, reference_doctype="ToDo", reference_name=mine.name)
		frappe.set_user(PLAIN_USER)
		self.assertEqual(document_messages("ToDo", mine.name)["messages"], [])

	def test_bad_arguments_are_validation_errors(self):
		for doctype, name in (("No Such DocType", "x"), ("", "x"), ("ToDo", ""), ("ToDo", "x" * 200)):
			with self.assertRaises(frappe.ValidationError):
				document_messages(doctype, name)


class TestIncomingMessagesNameTheDocumentTheirHandlerWrote(WorkerCase):
	def test_a_processed_message_references_the_first_document_its_handler_wrote(self):
		prefix = self.prefix

		def make_todo(message):
			if message.payload.get("fail"):
				frappe.get_doc({"doctype": "ToDo", "description": f"{prefix} rolled back"}).insert()
				raise ValueError("no")
			frappe.get_doc({"doctype": "ToDo", "description": f"{prefix} {message.payload['what']}"}).insert()
			frappe.get_doc({"doctype": "ToDo", "description": f"{prefix} second"}).insert()

		self.subscribe(make_todo)
		self.run_worker([{"what": "first"}, {"fail": True}], lambda s: s.processed + s.dead >= 2)
		[done] = self.record(0)
		todo = frappe.db.get_value("ToDo", {"description": f"{prefix} first"})
		self.assertEqual(
			frappe.db.get_value("EDA Message", done.name, ["reference_doctype", "reference_name"]),
			("ToDo", todo),
		)
		self.assertEqual([m.name for m in document_messages("ToDo", todo)["messages"]], [done.name])
		[failed] = self.record(1)
		self.assertEqual(frappe.db.get_value("EDA Message", failed.name, "reference_name"), None)


def _plain_user():
	if not frappe.db.exists("User", PLAIN_USER):
		user = frappe.get_doc(
			{"doctype": "User", "email": PLAIN_USER, "first_name": "Plain", "send_welcome_email": 0}
		)
		user.insert(ignore_permissions=True)
		user.add_roles("Desk User")  # a desk user with no EDA role
