# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""What a rule sends and where: broken targets never fail a save, templates are plain, permlevels hold."""

import json

import frappe
from frappe.custom.doctype.property_setter.property_setter import make_property_setter
from frappe.tests.utils import FrappeTestCase

from frappe_eda.messaging.errors import InvalidRoutingKeyTemplate
from frappe_eda.messaging.templates import check_template, render_template
from frappe_eda.outbox import resolve_destination
from frappe_eda.outbox.rules import clear_rules_cache

MANAGER = "eda-target-manager@example.com"


class RuleCase(FrappeTestCase):
	def setUp(self):
		frappe.db.rollback()
		frappe.db.set_single_value("EDA Settings", "enabled", 1)
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		clear_rules_cache()

	def tearDown(self):
		frappe.db.rollback()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		frappe.clear_cache(doctype="ToDo")
		clear_rules_cache()

	def rule(self, **values):
		doc = frappe.get_doc(
			{"doctype": "EDA Event Rule", "document_type": "ToDo", "event": "after_insert", **values}
		).insert()
		clear_rules_cache()
		return doc

	def destination(self, name, **values):
		return frappe.get_doc(
			{"doctype": "EDA Destination", "destination_name": name, "exchange": "erp.x", **values}
		).insert()

	def message_of(self, todo):
		return frappe.get_all(
			"EDA Message",
			filters={"reference_name": todo.name},
			fields=["name", "message_id", "status", "last_error", "payload", "exchange", "routing_key"],
		)


class TestBrokenTargets(RuleCase):
	def test_a_disabled_destination_records_the_message_failed_and_the_document_saves(self):
		self.destination("eda-off-dest")
		self.rule(destination="eda-off-dest")
		frappe.db.set_value("EDA Destination", "eda-off-dest", "enabled", 0)  # after the rule was saved
		todo = frappe.get_doc({"doctype": "ToDo", "description": "saved anyway"}).insert()
		[message] = self.message_of(todo)
		self.assertEqual(message.status, "Failed")
		self.assertIn("eda-off-dest", message.last_error)
		self.assertIn("is disabled", message.last_error)
		[failure] = frappe.get_all(
			"EDA Error", filters={"message_id": message.message_id}, fields=["exception_type", "error"]
		)
		self.assertEqual(failure.exception_type, "frappe_eda.messaging.errors.DestinationUnavailable")
		self.assertEqual(json.loads(message.payload)["payload"]["description"], "saved anyway")

	def test_a_deleted_destination_records_the_message_failed_and_the_document_saves(self):
		self.destination("eda-gone-dest")
		self.rule(destination="eda-gone-dest")
		frappe.db.delete("EDA Destination", {"name": "eda-gone-dest"})
		todo = frappe.get_doc({"doctype": "ToDo", "description": "saved anyway"}).insert()
		[message] = self.message_of(todo)
		self.assertEqual(message.status, "Failed")
		self.assertIn("eda-gone-dest", message.last_error)
		self.assertIn("does not exist", message.last_error)

	def test_the_managers_are_told_once_the_document_commits(self):
		from frappe_eda.frappe_eda.doctype.eda_message.test_eda_message_access import make_user

		make_user(MANAGER, "EDA Manager")
		self.destination("eda-told-dest")
		self.rule(destination="eda-told-dest")
		frappe.db.set_value("EDA Destination", "eda-told-dest", "enabled", 0)
		todo = frappe.get_doc({"doctype": "ToDo", "description": "eda told"}).insert()
		[message] = self.message_of(todo)
		self.assertFalse(
			frappe.db.exists("Notification Log", {"for_user": MANAGER, "document_name": message.name})
		)
		frappe.db.commit()
		try:
			self.assertTrue(
				frappe.db.exists("Notification Log", {"for_user": MANAGER, "document_name": message.name})
			)
		finally:
			frappe.db.delete("Notification Log", {"document_name": message.name})
			frappe.db.delete("EDA Error", {"message_id": message.message_id})
			frappe.db.delete("EDA Message", {"name": message.name})
			frappe.db.delete("ToDo", {"name": todo.name})
			frappe.db.delete("EDA Event Rule", {"destination": "eda-told-dest"})
			frappe.db.delete("EDA Destination", {"name": "eda-told-dest"})
			frappe.db.commit()

	def test_a_bad_template_that_escaped_validation_fails_the_message_not_the_save(self):
		rule = frappe.get_doc(
			{
				"doctype": "EDA Event Rule",
				"document_type": "ToDo",
				"event": "after_insert",
				"enabled": 1,
				"routing_key": "{doctype.__class__}",
			}
		)
		rule.db_insert()  # as an app's eda_publish hook would carry it: no form validated it
		clear_rules_cache()
		todo = frappe.get_doc({"doctype": "ToDo", "description": "saved anyway"}).insert()
		[message] = self.message_of(todo)
		self.assertEqual(message.status, "Failed")
		self.assertIn("{doctype.__class__} is not a placeholder", message.last_error)

	def test_a_document_too_large_for_any_consumer_fails_the_message_not_the_save(self):
		self.rule()
		todo = frappe.get_doc({"doctype": "ToDo", "description": "x" * (1024 * 1024 + 1)}).insert()
		[message] = self.message_of(todo)
		self.assertEqual(message.status, "Failed")
		self.assertIn("consumers accept", message.last_error)
		[failure] = frappe.get_all(
			"EDA Error", filters={"message_id": message.message_id}, pluck="exception_type"
		)
		self.assertEqual(failure, "frappe_eda.messaging.errors.BodyTooLarge")

	def test_an_exchange_the_columns_cannot_hold_fails_the_message_not_the_save(self):
		"""120 characters AMQP carries, but stored HTML-escaped they are 660: over the column's 255."""
		exchange = "&'" * 60
		self.rule(exchange=exchange)
		todo = frappe.get_doc({"doctype": "ToDo", "description": "saved anyway"}).insert()
		[message] = self.message_of(todo)
		self.assertEqual(message.status, "Failed")
		self.assertEqual(
			message.exchange, frappe.db.get_single_value("EDA Settings", "default_exchange") or "eda.events"
		)
		self.assertIn("exchange", message.last_error)


class TestPublishRefusesWhatNoConsumerTakes(RuleCase):
	def test_a_payload_over_the_consumer_limit_raises_and_stores_nothing(self):
		import frappe_eda
		from frappe_eda.messaging.errors import BodyTooLarge

		before = frappe.db.count("EDA Message")
		with self.assertRaises(BodyTooLarge) as raised:
			frappe_eda.publish("big.thing", {"pad": "x" * (1024 * 1024)})
		self.assertIn("1048576", str(raised.exception))
		self.assertEqual(frappe.db.count("EDA Message"), before)

	def test_a_routing_key_amqp_cannot_carry_raises(self):
		import frappe_eda
		from frappe_eda.messaging.errors import FieldTooLong

		with self.assertRaises(FieldTooLong):
			frappe_eda.publish("long.key", {}, routing_key="k" * 256)


class TestRoutingKeyTemplates(RuleCase):
	def test_only_plain_placeholders_are_accepted(self):
		bad = [
			"{doctype.__class__}",
			"{doctype.__class__.__mro__}",
			"{name:>9999}",
			"{name!r}",
			"{event[0]}",
			"{0}",
			"{}",
			"{unknown}",
			"{doctype",
			"doctype}",
		]
		for template in bad:
			with self.subTest(template=template):
				with self.assertRaises(frappe.ValidationError):
					self.rule(routing_key=template, exchange="erp.x")
				with self.assertRaises(InvalidRoutingKeyTemplate):
					check_template(template, ("doctype", "event", "name"))
		self.rule(routing_key="erp.{doctype}.{event}.{name}.{{literal}}", exchange="erp.x")

	def test_destination_keys_take_only_the_type(self):
		for template in ("{type.__class__}", "{type:>9999}", "{doctype}", "{type!s}"):
			with self.subTest(template=template), self.assertRaises(frappe.ValidationError):
				self.destination(f"eda-bad-{abs(hash(template))}", routing_key=template)
		self.destination("eda-good-dest", routing_key="erp.{type}")

	def test_rendering_checks_the_template_again(self):
		frappe.get_doc(
			{
				"doctype": "EDA Destination",
				"destination_name": "eda-raw-dest",
				"enabled": 1,
				"routing_key": "{type:>9999}",
			}
		).db_insert()
		with self.assertRaises(InvalidRoutingKeyTemplate):
			resolve_destination("eda-raw-dest", None, None, "todo.after_insert", "eda.events")
		self.assertEqual(render_template("erp.{type}", type="a{b}.{c}"), "erp.a{b}.{c}")

	def test_a_message_type_with_braces_is_not_a_template(self):
		self.destination("eda-plain-dest")
		self.assertEqual(
			resolve_destination("eda-plain-dest", None, None, "odd.{type}", "eda.events"),
			("erp.x", "odd.{type}"),
		)


class TestPermlevels(RuleCase):
	def setUp(self):
		super().setUp()
		make_property_setter("ToDo", "description", "permlevel", 1, "Int")
		frappe.clear_cache(doctype="ToDo")

	def payload(self, todo):
		[message] = self.message_of(todo)
		return json.loads(message.payload)["payload"]

	def test_a_field_above_permlevel_0_is_not_sent_unless_the_rule_lists_it(self):
		self.rule(exchange="erp.x")
		todo = frappe.get_doc({"doctype": "ToDo", "description": "salary 9000", "priority": "High"}).insert()
		payload = self.payload(todo)
		self.assertNotIn("description", payload)
		self.assertEqual(payload["priority"], "High")

	def test_a_rule_that_lists_the_field_sends_it(self):
		self.rule(exchange="erp.x", send_fields="description, priority")
		todo = frappe.get_doc({"doctype": "ToDo", "description": "salary 9000", "priority": "High"}).insert()
		payload = self.payload(todo)
		self.assertEqual((payload["description"], payload["priority"]), ("salary 9000", "High"))
