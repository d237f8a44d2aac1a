# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Someone is always told of a failure (``desk.notifications.recipients``).

Each test makes the roles and users it needs (a role nobody has, a user who has it, a disabled one), so
it passes on a site freshly created as the README says, where nobody has EDA Manager. The bell is
written through the real ``DeskNotifier`` (which commits, as in the worker); what the tests made is
deleted afterwards.
"""

from __future__ import annotations

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.desk.notifications import (
	FALLBACK_ROLE,
	DeskNotifier,
	managers,
	recipients,
	recipients_summary,
)
from frappe_eda.messaging.notify import DEAD_LETTERED, FailureNotice

ROLE = "EDA Test Notify Role"
USER = "eda-notify-test@example.com"
FINGERPRINT = "eda-notified-test"


def notice() -> FailureNotice:
	return FailureNotice(
		kind=DEAD_LETTERED,
		message_id="eda-notified-test-message",
		routing_key="eda.notified.test",
		exception_type="ValueError",
		error="refused",
		fingerprint=FINGERPRINT,
		queue="eda.notified.test",
	)


class TestSomeoneIsAlwaysTold(FrappeTestCase):
	def setUp(self):
		frappe.set_user("Administrator")
		if not frappe.db.exists("Role", ROLE):
			frappe.get_doc({"doctype": "Role", "role_name": ROLE, "desk_access": 1}).insert()
		frappe.db.commit()

	def tearDown(self):
		frappe.db.rollback()
		frappe.db.delete("Notification Log", {"subject": ["like", f"%{ROLE}%"]})
		frappe.db.delete("Has Role", {"role": ROLE})
		if frappe.db.exists("User", USER):
			frappe.delete_doc("User", USER, force=True, ignore_permissions=True)
		frappe.delete_doc("Role", ROLE, force=True, ignore_missing=True, ignore_permissions=True)
		frappe.db.commit()

	def user_with_role(self, enabled: int = 1) -> str:
		user = frappe.get_doc(
			{"doctype": "User", "email": USER, "first_name": "Notify", "send_welcome_email": 0}
		).insert(ignore_permissions=True)
		user.add_roles(ROLE)
		if not enabled:
			user.reload()
			user.enabled = 0
			user.save(ignore_permissions=True)
		frappe.db.commit()
		return USER

	def test_a_role_nobody_has_falls_back_to_the_system_managers(self):
		told = recipients(ROLE)
		self.assertTrue(told.fallback)
		self.assertEqual(told.users, managers(FALLBACK_ROLE))
		self.assertIn("Administrator", told.users)  # every site has it: never nobody
		self.assertIn(f"no enabled user has the role {ROLE}", told.because())

	def test_the_bell_reaches_the_system_managers_and_says_why(self):
		DeskNotifier(ROLE).notify(notice())
		logs = frappe.get_all(
			"Notification Log",
			filters={"subject": ["like", f"%ValueError%{ROLE}%"], "type": "Alert"},
			fields=["for_user", "subject"],
		)
		self.assertEqual({log.for_user for log in logs}, set(managers(FALLBACK_ROLE)))
		for log in logs:
			self.assertIn(f"sent to the {FALLBACK_ROLE}s: no enabled user has the role {ROLE}", log.subject)

	def test_a_user_with_the_role_is_told_alone(self):
		user = self.user_with_role()
		told = recipients(ROLE)
		self.assertEqual((told.users, told.fallback), ([user], False))
		self.assertEqual(told.because(), "")
		summary = recipients_summary(ROLE)
		self.assertFalse(summary["warn"])
		self.assertIn(user, summary["message"])

	def test_a_disabled_user_does_not_count(self):
		self.user_with_role(enabled=0)
		self.assertTrue(recipients(ROLE).fallback)

	def test_the_summary_warns_while_only_the_system_managers_are_told(self):
		summary = recipients_summary(ROLE)
		self.assertTrue(summary["warn"])
		self.assertTrue(summary["fallback"])
		self.assertIn(f"Give the role {ROLE}", summary["message"])

	def test_the_settings_form_shows_who_is_told(self):
		settings = frappe.get_doc("EDA Settings")
		settings.run_method("onload")
		shown = settings.get_onload().get("eda_notified")
		self.assertEqual(shown, recipients_summary(settings.notify_role or "EDA Manager"))
