# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Log Settings' purge of EDA Messages, through Log Settings itself, respects EDA Settings' retention."""

from unittest.mock import patch

import frappe
from frappe.tests.utils import FrappeTestCase

OLD = "2020-01-01 00:00:00"


class TestLogSettingsPurge(FrappeTestCase):
	def setUp(self):
		frappe.db.rollback()
		for status in ("Processed", "Published", "Dead", "Failed"):
			frappe.get_doc(
				{
					"doctype": "EDA Message",
					"message_id": f"logs-{status}",
					"direction": "Incoming",
					"status": status,
					"queue": "logs.q",
					"updated_at": OLD,
					"created_at": OLD,
				}
			).db_insert()

	def tearDown(self):
		frappe.db.rollback()

	def left(self):
		return sorted(frappe.get_all("EDA Message", filters={"queue": "logs.q"}, pluck="status"))

	def clear_logs(self):
		"""What LogSettings.clear_logs does for one entry, without its commit (the test owns the data)."""
		from frappe.core.doctype.log_settings.log_settings import _supports_log_clearing
		from frappe.model.base_document import get_controller

		self.assertTrue(_supports_log_clearing("EDA Message"))
		func = get_controller("EDA Message").clear_old_logs
		func(**frappe.get_newargs(func, {"days": 30}))

	def test_retention_0_in_eda_settings_keeps_everything(self):
		with patch.dict(frappe.local.conf, {"eda_retention_days": 0}):
			self.clear_logs()
		self.assertEqual(self.left(), ["Dead", "Failed", "Processed", "Published"])

	def test_otherwise_only_finished_messages_go(self):
		with patch.dict(frappe.local.conf, {"eda_retention_days": 30}):
			self.clear_logs()
		self.assertEqual(self.left(), ["Dead", "Failed"])
