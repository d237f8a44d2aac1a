# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""``eda_publish`` and ``eda_sensitive_fields`` read in the shape Frappe really gives them.

Frappe merges a dict hook of every installed app into one dict. These tests read hooks only through
Frappe's own loader: the installed apps' real hooks (frappe_eda's own ``eda_sensitive_fields``), and the
hooks.py of pretend apps (``frappe_eda/tests/hook_apps``) loaded with ``frappe.get_hooks(app_name=...)``
and merged with ``frappe.append_hook``, the two steps of Frappe's ``_load_app_hooks``. They are not
installed in the site, so what the site's saves use is checked with the installed app's hooks only.
"""

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.outbox.payload import document_payload, hidden_by_hooks, sensitive_fields
from frappe_eda.outbox.rules import all_rules, clear_rules_cache, hook_rules

APPS = "frappe_eda.tests.hook_apps"


def merged_hooks(*apps):
	"""What ``frappe.get_hooks()`` returns with these apps installed, built the way Frappe builds it."""
	merged = {}
	for app in apps:
		for key, value in frappe.get_hooks(app_name=f"{APPS}.{app}").items():
			frappe.append_hook(merged, key, value)
	return merged


class TestSensitiveFieldsHook(FrappeTestCase):
	def setUp(self):
		frappe.cache.delete_value("app_hooks")  # the loader reads the apps' current hooks.py

	def tearDown(self):
		frappe.db.rollback()

	def test_the_installed_apps_real_hook_keeps_user_secrets_out_of_payloads(self):
		declared = frappe.get_hooks("eda_sensitive_fields")
		self.assertIsInstance(declared, dict)  # merged across apps, not a list of dicts
		self.assertLessEqual({"reset_password_key", "api_key"}, set(declared["User"]))

		user = frappe.get_doc("User", "Administrator")
		user.reset_password_key, user.api_key = "reset-secret", "api-key-value"
		payload = document_payload(user)
		self.assertNotIn("reset_password_key", payload)
		self.assertNotIn("api_key", payload)
		self.assertNotIn("reset-secret", frappe.as_json(payload))
		self.assertIn("email", payload)
		self.assertLessEqual({"reset_password_key", "api_key", "api_secret"}, sensitive_fields("User"))

	def test_fields_of_several_apps_are_all_hidden(self):
		declared = merged_hooks("app_a", "app_b")["eda_sensitive_fields"]
		self.assertEqual(declared["ToDo"], ["description", "assigned_by"])  # what Frappe makes of it
		self.assertEqual(hidden_by_hooks(declared, "ToDo"), {"description", "assigned_by", "_comments"})
		self.assertEqual(hidden_by_hooks(declared, "Note"), {"_comments"})

	def test_entries_that_are_not_field_names_are_reported_and_the_rest_kept(self):
		declared = merged_hooks("app_a", "app_bad")["eda_sensitive_fields"]
		with self.assertLogs("frappe_eda.outbox.payload", "ERROR") as logged:
			self.assertEqual(hidden_by_hooks(declared, "ToDo"), {"description", "priority"})
		self.assertIn("not field names", logged.output[0])


class TestPublishHook(FrappeTestCase):
	def tearDown(self):
		clear_rules_cache()

	def test_specs_of_several_apps_all_become_rules(self):
		declared = merged_hooks("app_a", "app_b")["eda_publish"]
		rules = {(r.doctype, r.event): r for r in hook_rules(declared)}
		self.assertEqual(
			set(rules),
			{("ToDo", "after_insert"), ("ToDo", "on_trash"), ("ToDo", "on_update"), ("Note", "after_insert")},
		)
		created = rules["ToDo", "after_insert"]
		self.assertEqual((created.routing_key, created.fields), ("todo.created", ("description", "status")))
		self.assertEqual(rules["ToDo", "on_trash"].exchange, "audit.events")
		updated = rules["ToDo", "on_update"]
		self.assertEqual((updated.destination, updated.condition), ("warehouse", "doc.status == 'Open'"))
		# app_b's bare dict spec, which Frappe merged field by field, is read back as the one spec it was
		note = rules["Note", "after_insert"]
		self.assertEqual((note.routing_key, note.fields), ("note.added", ("title", "public")))

	def test_bad_entries_of_one_app_are_reported_and_skipped_and_the_others_kept(self):
		declared = merged_hooks("app_a", "app_bad")["eda_publish"]
		with self.assertLogs("frappe_eda.outbox.rules", "ERROR") as logged:
			rules = hook_rules(declared)
		self.assertEqual(
			sorted((r.event, r.routing_key) for r in rules),
			[("after_insert", "todo.created"), ("on_cancel", "todo.cancelled"), ("on_trash", "")],
		)
		problems = "\n".join(logged.output)
		for expected in ("not a dict", "on_explode", "fields is 5", "routing_key must be text", "''"):
			self.assertIn(expected, problems)

	def test_bare_dict_specs_of_several_apps_cannot_be_told_apart_and_are_reported(self):
		merged = {}
		for spec in ({"event": "on_update"}, {"event": "on_submit", "fields": ["a"]}):
			frappe.append_hook(merged, "eda_publish", {"Note": spec})
		with self.assertLogs("frappe_eda.outbox.rules", "ERROR") as logged:
			self.assertEqual(hook_rules(merged["eda_publish"]), [])
		self.assertIn("list of dicts", logged.output[0])

	def test_the_installed_apps_real_hook_loads_and_a_save_still_works(self):
		clear_rules_cache()
		frappe.cache.delete_value("app_hooks")
		hook_rules(frappe.get_hooks("eda_publish"))  # whatever the installed apps declare: no error
		self.assertIsInstance(all_rules(), dict)
		frappe.get_doc({"doctype": "ToDo", "description": "saved with the real hooks loaded"}).insert()
		frappe.db.rollback()
