# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.settings import OVERRIDES, load_settings


class TestEDASettings(FrappeTestCase):
	def setUp(self):
		# site_config.json eda_* keys win over the form; this site may have some set (e.g. the broker URL)
		self.saved_conf = {key: frappe.local.conf.pop(key) for key in OVERRIDES if key in frappe.local.conf}

	def tearDown(self):
		frappe.local.conf.update(self.saved_conf)
		frappe.db.rollback()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")

	def settings(self, **values):
		doc = frappe.get_single("EDA Settings")
		doc.update(values)
		return doc

	def test_bad_values_are_refused(self):
		for values in (
			{"retry_delays": "1,abc"},
			{"retry_delays": "5,-1"},
			{"retry_delays": "5,0"},
			{"retry_delays": "1,nan"},
			{"retry_delays": "inf"},
			{"max_attempts": 0},
			{"prefetch": 0},
			{"prefetch": -5},
			{"amqp_url": "http://x"},
			{"amqp_url": "", "port": 0},
			{"amqp_url": "", "port": 70000},
			{"retention_days": -1},
			{"queue_type": "stream"},
		):
			with self.subTest(values=values), self.assertRaises(frappe.ValidationError):
				self.settings(**values).save()

	def test_good_values_are_kept(self):
		self.settings(retry_delays="0.5, 2,10", max_attempts=1, prefetch=1, queue_type="quorum").save()
		settings = load_settings()
		self.assertEqual(settings.retry.delays, (0.5, 2.0, 10.0))
		self.assertEqual((settings.retry.max_attempts, settings.prefetch), (1, 1))

	def test_password_stays_out_of_the_url_repr_and_site_config_wins(self):
		doc = self.settings(
			amqp_url="", host="mq.internal", username="erp", password="top-secret", vhost="prod", enabled=1
		)
		doc.save()
		settings = load_settings()
		self.assertEqual(settings.broker.redacted_url(), "amqp://erp:***@mq.internal:5672/prod")
		self.assertNotIn("top-secret", repr(settings))
		frappe.local.conf["eda_amqp_url"] = "amqp://u:p@override:5672/%2F"
		try:
			self.assertIn("override", load_settings().broker.redacted_url())
		finally:
			del frappe.local.conf["eda_amqp_url"]

	def test_install_creates_the_roles_the_defaults_name(self):
		from frappe_eda.setup.install import ROLES, after_install

		frappe.db.delete("Role", {"name": "EDA User"})  # rolled back in tearDown
		after_install()
		after_install()  # idempotent: migrate/reinstall runs it again
		for role in ROLES:
			self.assertTrue(frappe.db.get_value("Role", role, "desk_access"), role)
		self.assertEqual(frappe.get_meta("EDA Settings").get_field("notify_role").default, "EDA Manager")


SECRET = "s3cret-Pw-9f2"
SECRET_URL = f"amqp://erp:{SECRET}@mq.internal:5672/prod"


class TestBrokerSecrets(FrappeTestCase):
	"""The broker URL carries a password: encrypted, never in Version rows, logs or EDA records."""

	def setUp(self):
		self.saved_conf = {key: frappe.local.conf.pop(key) for key in OVERRIDES if key in frappe.local.conf}

	def tearDown(self):
		frappe.local.conf.update(self.saved_conf)
		frappe.db.rollback()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")

	def test_a_url_with_a_password_is_kept_encrypted_and_out_of_versions_logs_and_records(self):
		import logging

		records = []
		handler = logging.Handler()
		handler.emit = lambda record: records.append(record.getMessage())
		logging.getLogger().addHandler(handler)
		try:
			doc = frappe.get_single("EDA Settings")
			doc.amqp_url = SECRET_URL
			doc.save()
			frappe.clear_document_cache("EDA Settings", "EDA Settings")
			settings = load_settings()
		finally:
			logging.getLogger().removeHandler(handler)
		self.assertEqual(settings.broker.url, SECRET_URL)  # read back with get_password
		self.assertNotIn(SECRET, repr(settings))
		self.assertNotIn(SECRET, str(frappe.db.get_single_value("EDA Settings", "amqp_url")))
		self.assertNotIn(SECRET, frappe.get_single("EDA Settings").amqp_url)
		for version in frappe.get_all("Version", filters={"ref_doctype": "EDA Settings"}, pluck="data"):
			self.assertNotIn(SECRET, version or "")
		self.assertFalse([line for line in records if SECRET in line])
		for doctype, field in (
			("EDA Message", "payload"),
			("EDA Message", "headers"),
			("EDA Error", "error"),
		):
			self.assertFalse(frappe.db.exists(doctype, {field: ["like", f"%{SECRET}%"]}))

	def test_an_unchanged_url_saves_again(self):
		doc = frappe.get_single("EDA Settings")
		doc.amqp_url = SECRET_URL
		doc.save()
		doc = frappe.get_single("EDA Settings")
		doc.prefetch = 7  # the form sends the URL back as asterisks
		doc.save()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		self.assertEqual(load_settings().broker.url, SECRET_URL)

	def test_the_patch_moves_a_clear_url_into_auth_and_scrubs_old_versions(self):
		from frappe_eda.patches import amqp_url_to_password

		frappe.db.set_single_value("EDA Settings", "amqp_url", SECRET_URL)  # as a Data field stored it
		frappe.db.delete("__Auth", {"doctype": "EDA Settings", "fieldname": "amqp_url"})
		version = frappe.get_doc(
			{
				"doctype": "Version",
				"ref_doctype": "EDA Settings",
				"docname": "EDA Settings",
				"data": frappe.as_json({"changed": [["amqp_url", "", SECRET_URL], ["prefetch", 1, 2]]}),
			}
		).insert(ignore_permissions=True)
		amqp_url_to_password.execute()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		self.assertNotIn(SECRET, frappe.db.get_single_value("EDA Settings", "amqp_url"))
		self.assertEqual(load_settings().broker.url, SECRET_URL)
		data = frappe.db.get_value("Version", version.name, "data")
		self.assertNotIn(SECRET, data)
		self.assertIn("amqp://erp:***@mq.internal:5672/prod", data)
		self.assertIn("prefetch", data)
		amqp_url_to_password.execute()  # idempotent
		self.assertEqual(load_settings().broker.url, SECRET_URL)


class TestRolesOnMigrate(FrappeTestCase):
	def tearDown(self):
		frappe.db.rollback()

	def test_migrate_recreates_a_missing_role_through_the_real_hook(self):
		frappe.db.delete("Has Role", {"role": "EDA User"})
		frappe.db.delete("Role", {"name": "EDA User"})
		for method in frappe.get_hooks("after_migrate", app_name="frappe_eda"):
			frappe.get_attr(method)()
		self.assertTrue(frappe.db.get_value("Role", "EDA User", "desk_access"))
