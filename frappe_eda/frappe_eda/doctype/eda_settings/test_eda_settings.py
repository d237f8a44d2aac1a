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
