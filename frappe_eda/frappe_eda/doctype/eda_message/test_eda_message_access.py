# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Who may read a message, and that messages never keep their document alive.

Users are real users with real roles; permissions go through Frappe's own checks (get_list,
has_permission, check_permission) and the app's real hooks.
"""

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda import compat
from frappe_eda.messaging.store import Status
from frappe_eda.outbox.rules import clear_rules_cache
from frappe_eda.stores.doctype_store import DocTypeStore
from frappe_eda.testing.store_contract import error, incoming, outgoing

READER = "eda-reader@example.com"
MANAGER = "eda-access-manager@example.com"


def make_user(email, *roles):
	if not frappe.db.exists("User", email):
		user = frappe.get_doc(
			{"doctype": "User", "email": email, "first_name": "EDA", "send_welcome_email": 0}
		)
		user.insert(ignore_permissions=True)
	user = frappe.get_doc("User", email)
	user.set("roles", [])
	user.add_roles(*roles)
	return email


class PublishingCase(FrappeTestCase):
	def setUp(self):
		frappe.db.rollback()
		frappe.db.set_single_value("EDA Settings", "enabled", 1)
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		clear_rules_cache()

	def tearDown(self):
		frappe.set_user("Administrator")
		frappe.db.rollback()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		clear_rules_cache()

	def rule(self, event, **values):
		frappe.get_doc(
			{"doctype": "EDA Event Rule", "document_type": "ToDo", "event": event, **values}
		).insert()
		clear_rules_cache()


class TestDeletingDocumentsThatPublished(PublishingCase):
	def test_a_document_with_messages_can_be_deleted(self):
		self.rule("after_insert")
		todo = frappe.get_doc({"doctype": "ToDo", "description": "eda delete me"}).insert()
		self.assertTrue(frappe.db.exists("EDA Message", {"reference_name": todo.name}))
		frappe.clear_cache()  # Frappe caches which DocTypes link to ToDo; a stale cache would hide the link
		frappe.delete_doc("ToDo", todo.name)
		self.assertFalse(frappe.db.exists("ToDo", todo.name))
		self.assertTrue(frappe.db.exists("EDA Message", {"reference_name": todo.name}))  # history stays

	def test_an_on_trash_rule_does_not_block_the_delete_it_reports(self):
		self.rule("on_trash")
		todo = frappe.get_doc({"doctype": "ToDo", "description": "eda trash me"}).insert()
		frappe.clear_cache()
		frappe.delete_doc("ToDo", todo.name)
		self.assertFalse(frappe.db.exists("ToDo", todo.name))
		[event] = frappe.get_all("EDA Message", filters={"reference_name": todo.name}, pluck="message_type")
		self.assertEqual(event, "todo.on_trash")

	def test_a_message_with_errors_can_be_deleted(self):
		store = DocTypeStore(commit=False)
		store.save([incoming("del-1", "q", status=Status.DEAD)])
		store.add_error(error("del-1", "q"))
		name = frappe.db.get_value("EDA Message", {"message_id": "del-1"})
		frappe.clear_cache()
		frappe.delete_doc("EDA Message", name)
		self.assertFalse(frappe.db.exists("EDA Message", name))


class TestWhoReadsPayloads(FrappeTestCase):
	"""EDA User reads a message only with read access to its document; managers read everything."""

	def setUp(self):
		frappe.db.rollback()
		make_user(READER, "EDA User")
		make_user(MANAGER, "EDA Manager")
		hidden = frappe.get_doc({"doctype": "ToDo", "description": "not yours"}).insert()
		mine = frappe.get_doc({"doctype": "ToDo", "description": "yours", "allocated_to": READER}).insert()
		store = DocTypeStore(commit=False)
		store.save(
			[
				outgoing("acc-mine", reference_doctype="ToDo", reference_name=mine.name),
				outgoing("acc-hidden-todo", reference_doctype="ToDo", reference_name=hidden.name),
				outgoing("acc-role", reference_doctype="Role", reference_name="System Manager"),
				outgoing("acc-gone", reference_doctype="ToDo", reference_name="no-such-todo"),
				outgoing("acc-none"),
				incoming("acc-mine", "acc.q"),
				# received, and applied by its handler to a ToDo the reader may read (consumer.written)
				incoming("acc-received", "acc.q", reference_doctype="ToDo", reference_name=mine.name),
			]
		)
		store.add_error(error("acc-received", "acc.q"))
		for message_id in ("acc-mine", "acc-hidden-todo", "acc-role", "acc-none"):
			store.add_error(error(message_id))
		self.names = {
			r.message_id: r.name
			for r in frappe.get_all(
				"EDA Message",
				filters={"message_id": ["like", "acc-%"], "direction": "Outgoing"},
				fields=["name", "message_id"],
			)
		}

	def tearDown(self):
		frappe.set_user("Administrator")
		frappe.db.rollback()

	def visible(self, doctype):
		return sorted(
			set(frappe.get_list(doctype, filters={"message_id": ["like", "acc-%"]}, pluck="message_id"))
		)

	def test_an_eda_user_lists_only_messages_of_documents_they_may_read(self):
		frappe.set_user(READER)
		self.assertEqual(self.visible("EDA Message"), ["acc-mine"])
		self.assertEqual(self.visible("EDA Error"), ["acc-mine"])
		self.assertEqual(
			frappe.get_list(
				"EDA Message", filters={"message_id": ["like", "acc-%"]}, fields=[compat.count_field("n")]
			)[0].n,
			1,
		)

	def test_an_eda_user_opens_only_messages_of_documents_they_may_read(self):
		frappe.set_user(READER)
		for message_id, name in self.names.items():
			with self.subTest(message_id=message_id):
				allowed = frappe.has_permission("EDA Message", "read", doc=name)
				self.assertEqual(allowed, message_id == "acc-mine")
				if not allowed:
					with self.assertRaises(frappe.PermissionError):
						frappe.get_doc("EDA Message", name).check_permission("read")
		for row in frappe.get_all(
			"EDA Error", filters={"message_id": ["like", "acc-%"]}, fields=["name", "message_id"]
		):
			with self.subTest(error=row.message_id):
				self.assertEqual(
					frappe.has_permission("EDA Error", "read", doc=row.name), row.message_id == "acc-mine"
				)

	def test_a_received_message_is_for_managers_only_even_when_it_names_a_readable_document(self):
		received = frappe.db.get_value("EDA Message", {"message_id": "acc-received"})
		frappe.set_user(READER)
		self.assertFalse(frappe.has_permission("EDA Message", "read", doc=received))
		self.assertNotIn("acc-received", self.visible("EDA Message"))
		self.assertNotIn("acc-received", self.visible("EDA Error"))
		frappe.set_user(MANAGER)
		self.assertIn("acc-received", self.visible("EDA Message"))

	def test_an_error_is_read_by_its_own_fields_not_by_an_id_another_record_shares(self):
		"""A site that consumes its own events: an incoming record shares the outgoing one's id. Its error
		(and traceback) stays the managers' in lists, counts and forms."""
		DocTypeStore(commit=False).add_error(
			error("acc-mine", "acc.q", traceback="Traceback: received secret")
		)
		received_error = frappe.db.get_value("EDA Error", {"message_id": "acc-mine", "direction": "Incoming"})
		frappe.set_user(READER)
		self.assertFalse(frappe.has_permission("EDA Error", "read", doc=received_error))
		rows = frappe.get_list(
			"EDA Error", filters={"message_id": "acc-mine"}, fields=["direction", "traceback"]
		)
		self.assertEqual([r.direction for r in rows], ["Outgoing"])
		self.assertNotIn("received secret", str(rows))

	def test_frappe_client_get_count_counts_only_what_the_user_may_read(self):
		"""As /api/method/frappe.client.get_count is served: the method the real hooks name for it
		(override_whitelisted_methods, as frappe.handler.execute_cmd looks it up), checked as whitelisted
		and called as the handler calls it. Frappe's own counts without permissions."""

		def count(doctype, filters, user):
			[method] = frappe.get_hooks("override_whitelisted_methods")["frappe.client.get_count"][-1:]
			function = frappe.get_attr(method)
			frappe.set_user(user)
			try:
				frappe.is_whitelisted(function)
				return frappe.call(function, doctype=doctype, filters=frappe.as_json(filters))
			finally:
				frappe.set_user("Administrator")

		probe = {"message_id": ["like", "acc-%"], "payload": ["like", "%"]}
		self.assertEqual(count("EDA Message", probe, READER), 1)
		self.assertEqual(count("EDA Message", probe, MANAGER), 7)
		plain = make_user("eda-plain@example.com")  # no role at all
		with self.assertRaises(frappe.PermissionError):
			count("EDA Message", probe, plain)
		self.assertGreaterEqual(count("ToDo", {}, "Administrator"), 2)  # other DocTypes: Frappe's as before

	def test_a_missing_name_and_one_that_is_not_yours_get_the_same_answer(self):
		from frappe_eda.desk.api import message_errors

		frappe.set_user(READER)
		answers = []
		for name in (self.names["acc-hidden-todo"], "acc-no-such-name"):
			with self.assertRaises(frappe.PermissionError) as refused:
				message_errors(name)
			answers.append(str(refused.exception).replace(name, "?"))
		self.assertEqual(answers[0], answers[1])

	def test_the_desk_api_refuses_the_errors_of_a_message_the_user_may_not_read(self):
		from frappe_eda.desk.api import message_errors

		frappe.set_user(READER)
		self.assertEqual(len(message_errors(self.names["acc-mine"])), 1)
		with self.assertRaises(frappe.PermissionError):
			message_errors(self.names["acc-hidden-todo"])

	def test_managers_read_everything(self):
		frappe.set_user(MANAGER)
		self.assertEqual(
			self.visible("EDA Message"),
			["acc-gone", "acc-hidden-todo", "acc-mine", "acc-none", "acc-received", "acc-role"],
		)
		self.assertTrue(all(frappe.has_permission("EDA Message", "read", doc=n) for n in self.names.values()))

	def test_the_failure_groups_report_is_for_managers_only(self):
		"""Groups sample errors of every document; an EDA User must not read them through the report."""
		from frappe.desk.query_report import run

		frappe.set_user(READER)
		with self.assertRaises(frappe.PermissionError):
			run("EDA Failure Groups", ignore_prepared_report=True)
		frappe.set_user(MANAGER)
		groups = run("EDA Failure Groups", ignore_prepared_report=True)["result"]
		self.assertTrue(any(row.get("count") for row in groups))

	def test_the_patch_takes_eda_user_off_the_report_of_an_older_site(self):
		from frappe_eda.patches import failure_groups_for_managers

		report = frappe.get_doc("Report", "EDA Failure Groups")
		report.append("roles", {"role": "EDA User"})  # as an older version installed it
		report.db_update_all()
		failure_groups_for_managers.execute()
		roles = frappe.get_all("Has Role", filters={"parent": "EDA Failure Groups"}, pluck="role")
		self.assertNotIn("EDA User", roles)
		self.assertIn("EDA Manager", roles)
