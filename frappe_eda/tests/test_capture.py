# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""What the outbox captures of a document's life (``outbox.doc_events``): imports, patches, migrations,
``db_set``, renames, and the content hash each document message carries.

EDA is enabled for this process through ``frappe.conf`` (what ``eda_enabled`` in site_config.json sets)
and EDA Event Rules are inserted per test; every test but the Data Import one rolls back. The Data
Import runs through Frappe's real importer, which commits row by row: that test marks its ToDos and its
rule's condition with a unique marker (other tests' ToDos never match) and deletes what it made.
The rename tests use the custom DocType ``EDA Capture Thing`` (renamable), the import tests ``EDA Import
Thing`` (importable: Frappe v16's ToDo is not), each created by its class's set-up and dropped by its
tear-down.
"""

from __future__ import annotations

import json

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.outbox.rules import clear_rules_cache
from frappe_eda.replication.content import HASH_KEY, document_hash
from frappe_eda.tests import doctypes
from frappe_eda.tests.doctypes import drop_doctypes, ensure_doctypes, field

THING = "EDA Capture Thing"
IMPORTED = "EDA Import Thing"
FLAGS = ("in_import", "in_patch", "in_migrate", "in_install")


def outbox(doctype, name=None):
	filters = {"reference_doctype": doctype, "direction": "Outgoing"}
	if name is not None:
		filters["reference_name"] = name
	rows = frappe.get_all(
		"EDA Message",
		filters=filters,
		fields=["name", "status", "message_type", "payload", "reference_name"],
		order_by="creation asc",
	)
	for row in rows:
		row.body = json.loads(row.payload)["payload"]
	return rows


class CaptureCase(FrappeTestCase):
	def setUp(self):
		frappe.db.rollback()
		self.enabled_before = frappe.conf.get("eda_enabled")
		frappe.conf["eda_enabled"] = 1
		self.flags_before = {flag: frappe.flags.get(flag) for flag in FLAGS}
		clear_rules_cache()

	def tearDown(self):
		for flag, value in self.flags_before.items():
			frappe.flags[flag] = value
		frappe.db.rollback()
		if self.enabled_before is None:
			frappe.conf.pop("eda_enabled", None)
		else:
			frappe.conf["eda_enabled"] = self.enabled_before
		clear_rules_cache()

	def rule(self, event, document_type="ToDo", **values):
		doc = frappe.get_doc(
			{"doctype": "EDA Event Rule", "document_type": document_type, "event": event, **values}
		).insert()
		clear_rules_cache()
		return doc

	def todo(self, description="capture me", **values):
		return frappe.get_doc({"doctype": "ToDo", "description": description, **values}).insert()


class TestCaptureFlags(CaptureCase):
	def test_an_import_publishes(self):
		self.rule("after_insert")
		frappe.flags.in_import = True
		todo = self.todo()
		[message] = outbox("ToDo", todo.name)
		self.assertEqual((message.status, message.message_type), ("Pending", "todo.after_insert"))

	def test_an_import_publishes_nothing_for_a_rule_that_skips_imports(self):
		self.rule("after_insert", skip_imports=1)
		frappe.flags.in_import = True
		todo = self.todo()
		self.assertEqual(outbox("ToDo", todo.name), [])
		frappe.flags.in_import = False
		other = self.todo()
		self.assertEqual(len(outbox("ToDo", other.name)), 1)  # the same rule outside an import publishes

	def test_a_patch_publishes_only_for_rules_that_say_so(self):
		self.rule("after_insert")
		frappe.flags.in_patch = True
		frappe.flags.in_migrate = True  # a patch runs inside bench migrate
		todo = self.todo()
		self.assertEqual(outbox("ToDo", todo.name), [])
		self.rule("on_update", publish_in_patches=1)
		other = self.todo()
		self.assertEqual([m.message_type for m in outbox("ToDo", other.name)], ["todo.on_update"])

	def test_a_migration_outside_patches_publishes_nothing(self):
		self.rule("after_insert", publish_in_patches=1)
		frappe.flags.in_migrate = True
		todo = self.todo()
		self.assertEqual(outbox("ToDo", todo.name), [])

	def test_an_install_publishes_nothing(self):
		self.rule("after_insert", publish_in_patches=1)
		frappe.flags.in_install = "frappe_eda"
		todo = self.todo()
		self.assertEqual(outbox("ToDo", todo.name), [])


class TestCaptureOnChange(CaptureCase):
	def test_db_set_publishes_one_on_change_with_the_changed_fields(self):
		self.rule("on_change")
		todo = self.todo()
		self.assertEqual(outbox("ToDo", todo.name), [])  # the on_change ending the insert is not published
		frappe.get_doc("ToDo", todo.name).db_set("status", "Closed")
		[message] = outbox("ToDo", todo.name)
		self.assertEqual(message.message_type, "todo.on_change")
		self.assertEqual(message.body["_eda_changed"], ["status"])
		self.assertEqual(message.body["status"], "Closed")

	def test_db_set_on_a_document_just_inserted_names_only_its_field(self):
		self.rule("on_change")
		todo = self.todo()
		todo.db_set("status", "Closed")
		[message] = outbox("ToDo", todo.name)
		self.assertEqual(message.body["_eda_changed"], ["status"])

	def test_db_set_after_a_save_in_the_same_request_names_only_its_field(self):
		self.rule("on_change")
		todo = self.todo()
		todo.description = "edited by a save"
		todo.save()
		todo.db_set("status", "Closed")
		[message] = outbox("ToDo", todo.name)
		self.assertEqual(message.body["_eda_changed"], ["status"])

	def test_two_db_sets_name_each_its_own_field(self):
		self.rule("on_change")
		todo = self.todo()
		doc = frappe.get_doc("ToDo", todo.name)
		doc.db_set("status", "Closed")
		doc.db_set("priority", "High")
		self.assertEqual(
			[m.body["_eda_changed"] for m in outbox("ToDo", todo.name)], [["status"], ["priority"]]
		)

	def test_a_save_publishes_no_on_change_only_its_own_rule(self):
		self.rule("on_change")
		self.rule("on_update")
		todo = self.todo()
		self.assertEqual([m.message_type for m in outbox("ToDo", todo.name)], ["todo.on_update"])
		todo.description = "saved again"
		todo.save()
		self.assertEqual(
			[m.message_type for m in outbox("ToDo", todo.name)], ["todo.on_update", "todo.on_update"]
		)


class TestCaptureRename(CaptureCase):
	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		ensure_doctypes([doctypes.doctype(THING, [field("title")], autoname="hash", allow_rename=1)])

	@classmethod
	def tearDownClass(cls):
		frappe.db.rollback()
		drop_doctypes([THING])
		super().tearDownClass()

	def test_a_rename_publishes_after_rename_with_the_old_and_new_names(self):
		self.rule("after_rename", document_type=THING)
		thing = frappe.get_doc({"doctype": THING, "title": "t"}).insert(set_name="CAP-OLD")
		frappe.rename_doc(THING, thing.name, "CAP-NEW")
		[message] = outbox(THING)
		self.assertEqual(
			(message.message_type, message.reference_name), ("eda_capture_thing.after_rename", "CAP-NEW")
		)
		self.assertEqual(message.body["name"], "CAP-NEW")
		self.assertEqual(message.body["_eda_rename"], {"old": "CAP-OLD", "new": "CAP-NEW", "merge": False})
		self.assertEqual(message.body[HASH_KEY], document_hash(THING, "CAP-NEW"))

	def test_a_merge_says_so(self):
		self.rule("after_rename", document_type=THING)
		frappe.get_doc({"doctype": THING, "title": "a"}).insert(set_name="CAP-A")
		frappe.get_doc({"doctype": THING, "title": "b"}).insert(set_name="CAP-B")
		frappe.rename_doc(THING, "CAP-A", "CAP-B", merge=True)
		[message] = outbox(THING)
		self.assertEqual(message.body["_eda_rename"], {"old": "CAP-A", "new": "CAP-B", "merge": True})


class TestCaptureHash(CaptureCase):
	def test_each_document_message_carries_the_content_hash(self):
		self.rule("after_insert", send_fields="description, status")
		self.rule("on_update")
		todo = self.todo()
		by_type = {m.message_type: m.body for m in outbox("ToDo", todo.name)}
		self.assertEqual(
			by_type["todo.after_insert"][HASH_KEY],
			document_hash("ToDo", todo.name, ("description", "status")),
		)
		self.assertEqual(by_type["todo.on_update"][HASH_KEY], document_hash("ToDo", todo.name))
		self.assertNotEqual(by_type["todo.after_insert"][HASH_KEY], by_type["todo.on_update"][HASH_KEY])

	def test_a_raw_sql_change_of_a_hashed_column_changes_the_hash(self):
		todo = self.todo()
		before = document_hash("ToDo", todo.name)
		modified = frappe.db.get_value("ToDo", todo.name, "modified")
		frappe.db.sql("update `tabToDo` set description=%s where name=%s", ("changed by sql", todo.name))
		self.assertEqual(frappe.db.get_value("ToDo", todo.name, "modified"), modified)
		self.assertNotEqual(document_hash("ToDo", todo.name), before)
		# a column the hash leaves out (bookkeeping) changes nothing
		after = document_hash("ToDo", todo.name)
		frappe.db.sql("update `tabToDo` set modified=now(6) where name=%s", todo.name)
		self.assertEqual(document_hash("ToDo", todo.name), after)

	def test_a_delete_carries_no_hash(self):
		self.rule("on_trash")
		todo = self.todo()
		frappe.delete_doc("ToDo", todo.name)
		[message] = outbox("ToDo", todo.name)
		self.assertNotIn(HASH_KEY, message.body)


class TestCaptureDataImport(CaptureCase):
	"""Through Frappe's importer (``Data Import.start_import``), which commits after every row."""

	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		priority = field("priority", "Select", options="Low\nMedium\nHigh")
		fields = [field("description", "Small Text"), priority]
		ensure_doctypes([doctypes.doctype(IMPORTED, fields, autoname="hash", allow_import=1)])

	@classmethod
	def tearDownClass(cls):
		frappe.db.rollback()
		drop_doctypes([IMPORTED])
		super().tearDownClass()

	def setUp(self):
		super().setUp()
		self.marker = f"eda-import-{frappe.generate_hash(length=10)}"
		self.made: list[tuple[str, str]] = []

	def tearDown(self):
		frappe.db.rollback()
		names = frappe.get_all(IMPORTED, filters={"description": ["like", f"%{self.marker}%"]}, pluck="name")
		if names:
			frappe.db.delete("EDA Message", {"reference_doctype": IMPORTED, "reference_name": ["in", names]})
			frappe.db.delete(IMPORTED, {"name": ["in", names]})
		for doctype, name in reversed(self.made):
			if doctype == "Data Import":
				frappe.db.delete("Data Import Log", {"data_import": name})
			frappe.db.delete(doctype, {"name": name})
		frappe.db.commit()
		super().tearDown()

	def import_todos(self, descriptions):
		csv = "Description,Priority\n" + "".join(f"{d},High\n" for d in descriptions)
		file = frappe.get_doc(
			{"doctype": "File", "file_name": f"{self.marker}.csv", "content": csv, "is_private": 1}
		).insert(ignore_permissions=True)
		self.made.append(("File", file.name))
		data_import = frappe.get_doc(
			{
				"doctype": "Data Import",
				"import_type": "Insert New Records",
				"reference_doctype": IMPORTED,
				"import_file": file.file_url,
			}
		).insert()
		self.made.append(("Data Import", data_import.name))
		frappe.db.commit()
		data_import.start_import()
		frappe.db.commit()  # as the background job does after the importer's last db_set (its status)
		return frappe.get_doc("Data Import", data_import.name)

	def test_each_imported_document_gets_a_pending_message(self):
		rule = self.rule(
			"after_insert", document_type=IMPORTED, condition=f"{self.marker!r} in (doc.description or '')"
		)
		self.made.append(("EDA Event Rule", rule.name))
		descriptions = [f"{self.marker} row {i}" for i in range(3)]
		data_import = self.import_todos(descriptions)
		self.assertEqual(data_import.status, "Success")
		names = frappe.get_all(IMPORTED, filters={"description": ["like", f"%{self.marker}%"]}, pluck="name")
		self.assertEqual(len(names), 3)
		for name in names:
			[message] = outbox(IMPORTED, name)
			# Pending until a relay sends it (one may run on this site)
			self.assertIn(message.status, ("Pending", "Sent"))
			self.assertEqual(message.message_type, "eda_import_thing.after_insert")
			self.assertEqual(message.body["priority"], "High")
		self.assertEqual(
			sorted(m.body["description"] for n in names for m in outbox(IMPORTED, n)), sorted(descriptions)
		)

	def test_an_import_publishes_nothing_for_a_rule_that_skips_imports(self):
		rule = self.rule(
			"after_insert",
			document_type=IMPORTED,
			condition=f"{self.marker!r} in (doc.description or '')",
			skip_imports=1,
		)
		self.made.append(("EDA Event Rule", rule.name))
		data_import = self.import_todos([f"{self.marker} quiet {i}" for i in range(2)])
		self.assertEqual(data_import.status, "Success")
		names = frappe.get_all(IMPORTED, filters={"description": ["like", f"%{self.marker}%"]}, pluck="name")
		self.assertEqual(len(names), 2)
		self.assertEqual([m for n in names for m in outbox(IMPORTED, n)], [])
