# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""EDA's hooks are harmless before EDA's tables exist (``setup.readiness``).

A site can run our hooks before our tables are there (an install that synced nothing, a restore, the
patches of a migrate). The test hides the real ``tabEDA Event Rule`` table under another name (DDL,
so it commits), then saves a document through the real ``doc_events["*"]`` hook and runs every
scheduler job of hooks.py, and always puts the table back.
"""

from __future__ import annotations

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.outbox.rules import all_rules, clear_rules_cache
from frappe_eda.setup import readiness

HIDDEN = "tabEDA Event Rule eda hidden"


def rename_table(old: str, new: str) -> None:
	if frappe.db.db_type == "postgres":
		frappe.db.sql_ddl(f'ALTER TABLE "{old}" RENAME TO "{new}"')
	else:
		frappe.db.sql_ddl(f"RENAME TABLE `{old}` TO `{new}`")


def forget() -> None:
	"""Forget what this process knew: the readiness verdicts, the rules in Redis and in the request."""
	readiness._ready_sites.clear()
	readiness._told_sites.clear()
	clear_rules_cache()
	frappe.local.cache.clear()


class TestHooksBeforeTheTablesExist(FrappeTestCase):
	def test_saves_and_scheduler_jobs_do_nothing_while_the_tables_are_missing(self):
		frappe.db.commit()
		rename_table("tabEDA Event Rule", HIDDEN)
		try:
			forget()
			self.assertFalse(readiness.eda_tables_exist())
			self.assertEqual(all_rules(), {})
			todo = frappe.get_doc({"doctype": "ToDo", "description": "saved before EDA's tables"}).insert()
			todo.description = "and saved again"
			todo.save()
			frappe.db.commit()
			for job in frappe.get_hooks("scheduler_events")["cron"].values():
				for path in job:
					if path.startswith("frappe_eda."):
						self.assertIsNone(frappe.get_attr(path)(), path)
			for period in ("hourly", "daily"):
				for path in frappe.get_hooks("scheduler_events")[period]:
					if path.startswith("frappe_eda."):
						self.assertIsNone(frappe.get_attr(path)(), path)
			frappe.delete_doc("ToDo", todo.name)
			frappe.db.commit()
		finally:
			rename_table(HIDDEN, "tabEDA Event Rule")
			forget()
		self.assertTrue(readiness.eda_tables_exist())
		self.assertIsInstance(all_rules(), dict)
