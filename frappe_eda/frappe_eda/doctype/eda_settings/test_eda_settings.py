# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.settings import load_settings


class TestEDASettings(FrappeTestCase):
	def tearDown(self):
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
			{"max_attempts": 0},
			{"prefetch": 0},
			{"amqp_url": "http://x"},
		):
			with self.subTest(values=values), self.assertRaises(frappe.ValidationError):
				self.settings(**values).save()

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
