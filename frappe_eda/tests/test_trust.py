# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Trust between servers on one site, the Frappe way: what a subscription accepts, the sender check the
worker applies for it, the verified sender on EDA Message, the site's signing key and what the site says
about its trust. Across real sites with their own broker users: ``test_two_sites_trust``."""

from __future__ import annotations

import json

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.processing import Delivery, DeliveryProcessor
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.store import Direction
from frappe_eda.messaging.trust import SIGNATURE, KeyRing, SigningKey
from frappe_eda.outbox import publish
from frappe_eda.replication.subscriptions import PROVEN, TRUSTED, add_to_registry, spec_of
from frappe_eda.replication.trust import trust_summary
from frappe_eda.settings import OVERRIDES, load_signer
from frappe_eda.stores.doctype_store import DocTypeStore


class TestTrust(FrappeTestCase):
	def setUp(self):
		self.saved_conf = {key: frappe.local.conf.pop(key) for key in OVERRIDES if key in frappe.local.conf}
		self.prefix = f"eda-trust-{frappe.generate_hash(length=6)}"

	def tearDown(self):
		frappe.local.conf.update(self.saved_conf)
		frappe.db.rollback()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")

	def subscription(self, **values):
		return frappe.get_doc(
			{
				"doctype": "EDA Subscription",
				"subscription_name": f"{self.prefix} {frappe.generate_hash(length=4)}",
				"source_doctype": "ToDo",
				"routing_key_patterns": "todo.*",
				**values,
			}
		)

	def test_a_new_subscription_requires_a_proven_source(self):
		self.assertEqual(frappe.new_doc("EDA Subscription").sender_check, PROVEN)
		doc = self.subscription()
		with self.assertRaisesRegex(frappe.ValidationError, "needs the Source Server"):
			doc.insert()
		with self.assertRaisesRegex(frappe.ValidationError, "Source Public Keys"):
			self.subscription(source="head.example.com", source_public_keys="ed25519:not-a-key").insert()
		self.subscription(sender_check=TRUSTED).insert()  # a trusted network may take any source

	def test_the_worker_applies_only_what_the_sources_broker_user_sent(self):
		doc = self.subscription(source="head.example.com").insert()
		registry = HandlerRegistry()
		add_to_registry(registry, [spec_of(doc, "eda.events")])
		processor = DeliveryProcessor(registry, DocTypeStore(commit=False))
		queue = spec_of(doc, "eda.events").queue
		body = encode(Message(type="todo.on_update", payload={"name": "x"}, source="head.example.com"))
		[decision] = processor.process(
			[Delivery(queue, "todo.on_update", body, "eda.events", user_id="wh2.example.com")]
		)
		self.assertEqual(decision.outcome.value, "dead")
		self.assertIn(
			"WrongSender: sent by broker user 'wh2.example.com'",
			decision.error.exception_type + ": " + decision.error.error,
		)
		stored = DocTypeStore(commit=False).get(decision.message_id, Direction.INCOMING, queue)
		self.assertEqual(stored.headers["x-eda-sender"], "wh2.example.com")
		row = frappe.db.get_value(
			"EDA Message", {"message_id": decision.message_id, "queue": queue}, "verified_sender"
		)
		self.assertEqual(row, "wh2.example.com")

	def test_a_signing_key_signs_every_outbox_row_and_stays_secret(self):
		key = SigningKey.generate()
		settings = frappe.get_single("EDA Settings")
		settings.signing_key = key.text
		settings.save(ignore_permissions=True)
		self.assertEqual(frappe.db.get_single_value("EDA Settings", "public_key"), key.public.text)
		self.assertNotIn(
			key.text, json.dumps(frappe.db.sql("select * from tabSingles where doctype='EDA Settings'"))
		)
		for version in frappe.get_all("Version", filters={"ref_doctype": "EDA Settings"}, pluck="data"):
			self.assertNotIn(key.text, version)
		self.assertEqual(load_signer().public, key.public)
		message = publish("todo.signed", {"n": 1}, routing_key=f"{self.prefix}.todo")
		row = frappe.db.get_value(
			"EDA Message", {"message_id": message.id}, ["payload", "headers"], as_dict=True
		)
		signature = json.loads(row.headers)[SIGNATURE]
		KeyRing([key.public]).verify(row.payload.encode("utf-8"), signature)  # raises if it does not verify

	def test_the_site_says_when_it_trusts_blindly(self):
		frappe.local.conf["eda_amqp_url"] = f"amqp://{frappe.local.site}:pw@127.0.0.1:5672/%2F"
		frappe.local.conf["eda_trusted_network"] = 0
		frappe.db.set_value("EDA Subscription", {"sender_check": TRUSTED}, "enabled", 0)
		calm = trust_summary()
		self.assertFalse(calm["warn"], calm)
		self.assertIn("proven senders", calm["message"])
		frappe.local.conf["eda_amqp_url"] = "amqp://guest:guest@127.0.0.1:5672/%2F"
		frappe.local.conf["eda_trusted_network"] = 1
		self.subscription(sender_check=TRUSTED, enabled=1).insert()
		warned = trust_summary()
		self.assertTrue(warned["warn"])
		self.assertIn("publishes as broker user 'guest'", warned["message"])
		self.assertIn("receipts and reconciliation requests are taken from any member", warned["message"])
		self.assertIn(f"subscriptions {self.prefix}", warned["message"])
