# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Delivery receipts across sites, on this site's database and the machine's RabbitMQ.

The receiving side: a subscription's receipt is an outbox message to the key the source asked for, and
a subscription's failure recorded by the worker's store is receipted as Retrying or Refused. The
sending side: a receipt is kept on the outgoing EDA Message it answers, the newest per server and
subscription, its text inert; the document's form and the message's form read it. The last test sends
a real receipt through the broker to a real worker.

Everything but the broker test runs in the test's transaction and is rolled back; that one commits
(the worker reads on a connection of its own) and deletes what it made.
"""

import json
import time
from datetime import datetime, timedelta, timezone

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.consumer import build_worker
from frappe_eda.desk import api, tracking
from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.envelope import Message, decode, encode
from frappe_eda.messaging.processing import ATTEMPT, Delivery, DeliveryProcessor
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import HandlerRegistry, Subscription, default_registry
from frappe_eda.messaging.replication import addressing
from frappe_eda.messaging.replication.receipts import (
	RECEIPT_TYPE,
	InvalidReceipt,
	Receipt,
	ReceiptOutcome,
)
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.store import Direction, MessageRecord, Status
from frappe_eda.messaging.topology import TopologyDeclarer, topology_for
from frappe_eda.outbox import publish
from frappe_eda.replication import subscription_handler_name
from frappe_eda.replication.receipts import (
	RECEIPT,
	ReceiptingStore,
	receipt_name,
	receipt_queue,
	receipt_subscription,
	receipts_of,
	receipts_wanted,
	record_receipt,
	send_receipt,
)
from frappe_eda.settings import load_outbox_settings, load_settings
from frappe_eda.stores.doctype_columns import from_column, unescape

MESSAGE = "EDA Message"


class MissingLink(Exception):
	"""As the apply handler raises for a link that is not there yet."""


def receipt_message(message_id, outcome="Applied", server="wh1.localhost", at=None, **fields):
	at = at or datetime.now(timezone.utc)
	payload = Receipt(
		message_id=message_id,
		server=server,
		subscription=fields.pop("subscription", "items-from-head"),
		outcome=ReceiptOutcome(outcome),
		at=at.isoformat(),
		**fields,
	).payload()
	return Message(type=RECEIPT_TYPE, payload=payload, source=server)


class ReceiptCase(FrappeTestCase):
	def setUp(self):
		self.prefix = f"eda-r-{frappe.generate_hash(length=8)}"
		self.site = frappe.local.site
		self.todo = frappe.get_doc({"doctype": "ToDo", "description": f"{self.prefix} todo"}).insert()

	def tearDown(self):
		frappe.db.rollback()
		frappe.set_user("Administrator")

	def sent(self, **headers):
		"""A real outgoing message about the ToDo, asking for receipts."""
		return publish(
			"todo.changed",
			{"name": self.todo.name},
			routing_key=f"{self.prefix}.todo",
			reference_doctype="ToDo",
			reference_name=self.todo.name,
			headers={addressing.REPLY_TO: addressing.receipt_key_for(self.site), **headers},
		)

	def message_name(self, message):
		return frappe.db.get_value(MESSAGE, {"message_id": message.id, "direction": "Outgoing"})

	def receipts(self, message):
		return frappe.get_all(
			RECEIPT, filters={"message_id": message.id}, fields=["*"], order_by="server asc, subscription asc"
		)

	def outbox_receipts(self, answering):
		"""Receipt messages this site queued in answer to ``answering`` (by their causation id)."""
		rows = frappe.get_all(
			MESSAGE,
			filters={"direction": "Outgoing", "message_type": RECEIPT_TYPE, "causation_id": answering.id},
			fields=["name", "exchange", "routing_key", "payload", "status"],
			order_by="creation asc",
		)
		for row in rows:
			row.envelope = decode(row.payload.encode())
		return rows


class TestRecordingReceipts(ReceiptCase):
	"""How receipts are kept, called as the worker's handler would be, in a trusted network (the sender
	is not checked: ``TestReceiptSenders`` is about that)."""

	def setUp(self):
		super().setUp()
		frappe.local.conf["eda_trusted_network"] = 1

	def tearDown(self):
		frappe.local.conf.pop("eda_trusted_network", None)
		super().tearDown()

	def test_a_receipt_is_kept_on_the_outgoing_message_it_answers(self):
		sent = self.sent()
		at = datetime(2026, 1, 12, 10, 4, 5, 123456, tzinfo=timezone.utc)
		name = record_receipt(receipt_message(sent.id, at=at, document="TD-REMOTE-1"))

		[row] = self.receipts(sent)
		self.assertEqual(row.name, name)
		self.assertEqual(row.name, receipt_name(sent.id, "wh1.localhost", "items-from-head"))
		self.assertEqual(row.eda_message, self.message_name(sent))
		self.assertEqual(
			(row.server, row.subscription, row.outcome), ("wh1.localhost", "items-from-head", "Applied")
		)
		self.assertEqual(row.document, "TD-REMOTE-1")
		self.assertEqual((row.reference_doctype, row.reference_name), ("ToDo", self.todo.name))
		self.assertEqual(row.outcome_at, at.replace(tzinfo=None), "stored naive UTC, as every EDA datetime")
		now = datetime.now(timezone.utc).replace(tzinfo=None)
		self.assertLess(abs((now - row.received_at).total_seconds()), 60)
		self.assertGreaterEqual(row.modified, row.creation)

	def test_a_newer_receipt_replaces_the_kept_one_and_an_older_one_arriving_late_does_not(self):
		sent = self.sent()
		t0 = datetime.now(timezone.utc) - timedelta(minutes=10)
		record_receipt(receipt_message(sent.id, "Retrying", at=t0, detail="MissingLink: missing Item ITEM-9"))
		record_receipt(receipt_message(sent.id, "Applied", at=t0 + timedelta(minutes=5), document="X-1"))
		[row] = self.receipts(sent)
		self.assertEqual((row.outcome, row.document, row.detail), ("Applied", "X-1", ""))

		record_receipt(receipt_message(sent.id, "Refused", at=t0 + timedelta(minutes=1), detail="late"))
		[row] = self.receipts(sent)
		self.assertEqual(row.outcome, "Applied", "an older receipt never overwrites a newer one")

	def test_each_server_and_subscription_has_its_own_receipt(self):
		sent = self.sent()
		record_receipt(receipt_message(sent.id, "Applied", server="wh1.localhost"))
		record_receipt(
			receipt_message(sent.id, "Refused", server="wh2.localhost", detail="NotAddressedHere: no")
		)
		record_receipt(receipt_message(sent.id, "Skipped", server="wh2.localhost", subscription="other"))
		rows = self.receipts(sent)
		self.assertEqual(
			[(r.server, r.subscription, r.outcome) for r in rows],
			[
				("wh1.localhost", "items-from-head", "Applied"),
				("wh2.localhost", "items-from-head", "Refused"),
				("wh2.localhost", "other", "Skipped"),
			],
		)

	def test_a_receipt_for_a_message_this_site_never_sent_writes_nothing(self):
		before = frappe.db.count(RECEIPT)
		self.assertIsNone(record_receipt(receipt_message("no-such-message-" + self.prefix)))
		# an incoming message with that id is not one this site sent
		incoming = Message(type="x", payload={})
		ReceiptingStore(commit=False).save(
			[
				MessageRecord(
					incoming.id,
					Direction.INCOMING,
					Status.PROCESSED,
					"x",
					encode(incoming).decode(),
					queue=f"{self.prefix}.q",
				)
			]
		)
		self.assertIsNone(record_receipt(receipt_message(incoming.id)))
		# nor does an id that differs from a sent one by case only
		sent = self.sent()
		self.assertIsNone(record_receipt(receipt_message(sent.id.upper())))
		self.assertEqual(frappe.db.count(RECEIPT), before)

	def test_a_payload_that_is_no_receipt_is_refused_as_permanent(self):
		for payload in ([], {"message_id": "x"}, {"message_id": "x", "server": "s", "outcome": "Eaten"}):
			with self.assertRaises(InvalidReceipt):
				record_receipt(Message(type=RECEIPT_TYPE, payload=payload))

	def test_hostile_receipt_text_is_stored_inert_and_cut_to_its_column(self):
		sent = self.sent()
		script = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
		record_receipt(
			receipt_message(
				sent.id,
				"Refused",
				server=script + "s" * 300,
				subscription="<b>sub</b>\ud800",
				document="<a href='javascript:alert(3)'>doc</a>",
				detail=script + "x" * 10_000 + "\ud800",
			)
		)
		[row] = self.receipts(sent)
		for field in ("server", "subscription", "document", "detail"):
			self.assertNotIn("<", row[field], f"{field} is stored HTML-escaped")
		self.assertLessEqual(len(row.server), 140)
		self.assertLessEqual(len(row.document), 140)
		self.assertTrue(unescape(row.server).startswith(script), "read back as the server wrote it")
		self.assertTrue(unescape(row.detail).startswith(script))
		self.assertEqual(
			unescape(row.subscription), "<b>sub</b>\\ud800", "a lone surrogate became its escape"
		)
		self.assertEqual(receipts_of([row.eda_message])[row.eda_message][0]["detail"], row.detail)

	def test_a_receipt_dated_in_the_future_counts_as_arriving_now(self):
		"""Else one server's clock (or a hostile one) would pin its receipt above every later one."""
		sent = self.sent()
		record_receipt(receipt_message(sent.id, "Refused", at=datetime(9999, 1, 1, tzinfo=timezone.utc)))
		record_receipt(receipt_message(sent.id, "Applied"))
		[row] = self.receipts(sent)
		self.assertEqual(row.outcome, "Applied")
		self.assertLess(
			row.outcome_at, datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=1)
		)

	def test_receipts_show_on_the_documents_messages_and_on_the_message(self):
		sent = self.sent()
		record_receipt(receipt_message(sent.id, "Applied", document="TD-9"))
		record_receipt(
			receipt_message(
				sent.id, "Refused", server="wh2.localhost", detail="MissingLink: missing Item ITEM-9"
			)
		)
		result = tracking.document_messages("ToDo", self.todo.name)
		[message] = [m for m in result["messages"] if m.name == self.message_name(sent)]
		self.assertEqual(
			sorted((r["server"], r["outcome"], r["document"], r["detail"]) for r in message.receipts),
			[
				("wh1.localhost", "Applied", "TD-9", ""),
				("wh2.localhost", "Refused", "", "MissingLink: missing Item ITEM-9"),
			],
		)
		self.assertEqual(len(api.message_receipts(message.name)), 2)

	def test_only_who_may_read_the_message_reads_its_receipts(self):
		sent = self.sent()
		record_receipt(receipt_message(sent.id))
		frappe.set_user("Guest")
		with self.assertRaises(frappe.PermissionError):
			api.message_receipts(self.message_name(sent))
		frappe.set_user("Administrator")
		with self.assertRaises(frappe.ValidationError):
			api.message_receipts("x" * 141)


class TestSendingReceipts(ReceiptCase):
	def incoming(self, **headers):
		"""A message as another site's subscription receives it, asking for receipts on our key."""
		return Message(
			type="item.changed",
			payload={"name": "ITEM-9"},
			source="head.localhost",
			correlation_id="corr-" + self.prefix,
			headers={addressing.REPLY_TO: addressing.receipt_key_for("head.localhost"), **headers},
		)

	def test_a_receipt_is_queued_in_the_transaction_to_the_key_the_source_asked_for(self):
		message = self.incoming()
		send_receipt(message, "items-from-head", ReceiptOutcome.APPLIED, document="ITEM-9")
		[row] = self.outbox_receipts(message)
		self.assertEqual(row.status, "Pending")
		self.assertEqual(row.routing_key, "eda.receipt.head_localhost")
		self.assertEqual(row.exchange, load_outbox_settings().exchange)
		envelope = row.envelope
		self.assertEqual(envelope.type, RECEIPT_TYPE)
		self.assertEqual(
			(envelope.causation_id, envelope.correlation_id), (message.id, message.correlation_id)
		)
		self.assertNotIn(addressing.REPLY_TO, envelope.headers, "a receipt never asks for one back")
		self.assertNotIn(addressing.TO, envelope.headers)
		self.assertEqual(envelope.payload["server"], self.site)
		self.assertEqual(
			{k: envelope.payload[k] for k in ("message_id", "subscription", "outcome", "document")},
			{
				"message_id": message.id,
				"subscription": "items-from-head",
				"outcome": "Applied",
				"document": "ITEM-9",
			},
		)
		datetime.fromisoformat(envelope.payload["at"])
		frappe.db.rollback()
		self.assertEqual(self.outbox_receipts(message), [], "rolled back with the handler's transaction")

	def test_a_message_without_its_own_correlation_is_correlated_by_its_id(self):
		message = Message(type="x", headers={addressing.REPLY_TO: "eda.receipt.head_localhost"})
		send_receipt(message, "s", ReceiptOutcome.SKIPPED, exchange=f"{self.prefix}.events")
		[row] = self.outbox_receipts(message)
		self.assertEqual(row.envelope.correlation_id, message.id)
		self.assertEqual(row.exchange, f"{self.prefix}.events")

	def test_no_receipt_without_a_safe_reply_to_and_none_for_a_receipt(self):
		for message in (
			Message(type="x"),
			Message(type="x", headers={addressing.REPLY_TO: "orders.created"}),
			Message(type="x", headers={addressing.REPLY_TO: "eda.receipt.x\n"}),
			Message(type="x", headers={addressing.REPLY_TO: ["eda.receipt.x"]}),
			Message(type=RECEIPT_TYPE, headers={addressing.REPLY_TO: "eda.receipt.x"}),
		):
			send_receipt(message, "s", ReceiptOutcome.APPLIED)
			self.assertEqual(self.outbox_receipts(message), [], message.headers)

	def deliver(self, processor, queue, message, attempt=1):
		return processor.process(
			[
				Delivery(
					queue=queue,
					routing_key="item.changed",
					body=encode(message),
					exchange="erp.events",
					headers={ATTEMPT: attempt},
				)
			]
		)

	def failing_processor(self, queue, handler_name, error):
		def handler(message):
			raise error

		registry = HandlerRegistry()
		registry.add(Subscription(queue, ("item.*",), "erp.events", handler, handler_name))
		return DeliveryProcessor(registry, ReceiptingStore(commit=False), retry=RetryPolicy(max_attempts=2))

	def test_a_subscriptions_failure_is_receipted_retrying_then_refused_once_dead(self):
		queue = f"{self.prefix}.items"
		handler = subscription_handler_name(f"{self.prefix}-sub")
		processor = self.failing_processor(queue, handler, MissingLink("missing Item ITEM-9\nmore lines"))
		message = self.incoming()

		[decision] = self.deliver(processor, queue, message, attempt=1)
		self.assertEqual(decision.outcome.value, "retry")
		[retrying] = self.outbox_receipts(message)
		self.assertEqual(retrying.envelope.payload["outcome"], "Retrying")
		self.assertEqual(retrying.envelope.payload["detail"], "MissingLink: missing Item ITEM-9")
		self.assertEqual(retrying.envelope.payload["subscription"], f"{self.prefix}-sub")
		self.assertEqual(retrying.routing_key, "eda.receipt.head_localhost")

		[decision] = self.deliver(processor, queue, message, attempt=2)
		self.assertEqual(decision.outcome.value, "dead")
		refused = self.outbox_receipts(message)[-1]
		self.assertEqual(refused.envelope.payload["outcome"], "Refused")
		# the failure itself is recorded as ever
		self.assertEqual(
			len(frappe.get_all("EDA Error", filters={"message_id": message.id, "queue": queue})), 2
		)

	def test_the_failure_receipt_goes_to_the_subscriptions_exchange(self):
		queue, subscription = f"{self.prefix}.items", f"{self.prefix}-sub"
		self.subscription(subscription, f"{self.prefix}.replica")
		processor = self.failing_processor(queue, subscription_handler_name(subscription), MissingLink("x"))
		message = self.incoming()
		self.deliver(processor, queue, message, attempt=2)
		[row] = self.outbox_receipts(message)
		self.assertEqual(
			(row.exchange, row.envelope.payload["outcome"]), (f"{self.prefix}.replica", "Refused")
		)

	def test_a_receipt_that_cannot_be_sent_never_costs_the_failure_record(self):
		queue, subscription = f"{self.prefix}.items", f"{self.prefix}-sub"
		# 280 bytes: no AMQP short string holds it, so the publish refuses
		self.subscription(subscription, "é" * 140)
		processor = self.failing_processor(queue, subscription_handler_name(subscription), MissingLink("x"))
		message = self.incoming()
		with self.assertLogs("frappe_eda.replication.receipts", "WARNING"):
			[decision] = self.deliver(processor, queue, message, attempt=2)
		self.assertEqual(decision.outcome.value, "dead")
		self.assertEqual(self.outbox_receipts(message), [])
		self.assertEqual(
			frappe.db.get_value(MESSAGE, {"message_id": message.id, "queue": queue}, "status"), "Dead"
		)
		self.assertTrue(frappe.db.exists("EDA Error", {"message_id": message.id, "queue": queue}))

	def test_other_handlers_failures_and_bad_input_send_no_receipt(self):
		queue = f"{self.prefix}.items"
		message = self.incoming()
		processor = self.failing_processor(queue, "myapp.handlers.reserve", MissingLink("x"))
		self.deliver(processor, queue, message, attempt=2)
		self.assertEqual(self.outbox_receipts(message), [])
		# not JSON: dead under the subscription's handler name, but no envelope to answer
		processor = self.failing_processor(queue + "2", subscription_handler_name("s"), MissingLink("x"))
		before = frappe.db.count(MESSAGE, {"message_type": RECEIPT_TYPE})
		processor.process([Delivery(queue=queue + "2", routing_key="item.changed", body=b"{not json")])
		self.assertEqual(frappe.db.count(MESSAGE, {"message_type": RECEIPT_TYPE}), before)

	def subscription(self, name, exchange):
		"""An EDA Subscription row with ``exchange`` (written raw: only its exchange matters here)."""
		if not frappe.db.exists("DocType", "EDA Subscription"):
			self.skipTest("EDA Subscription is not installed on this site")
		doc = frappe.new_doc("EDA Subscription")
		doc.update({"name": name, "subscription_name": name, "exchange": exchange})
		doc.db_insert()


class TestReceiptConsumer(ReceiptCase):
	def test_the_receipt_subscription_takes_this_sites_key_on_its_own_queue(self):
		sub = receipt_subscription()
		key = addressing.receipt_key_for(self.site)
		self.assertEqual(sub.queue, receipt_queue(self.site))
		self.assertEqual(sub.queue, "eda.receipts." + key.removeprefix("eda.receipt."))
		self.assertEqual((sub.patterns, sub.exchange), ((key,), load_outbox_settings().exchange))
		self.assertTrue(sub.accepts(key))
		self.assertFalse(sub.accepts(addressing.receipt_key_for("other.site")))
		self.assertIs(sub.handler, record_receipt)

	def test_receipts_are_wanted_when_an_enabled_destination_asks_for_them(self):
		others = frappe.db.exists("EDA Destination", {"enabled": 1, "request_receipts": 1})
		name = f"{self.prefix}-dest"
		frappe.get_doc(
			{
				"doctype": "EDA Destination",
				"destination_name": name,
				"name": name,
				"enabled": 1,
				"request_receipts": 0,
			}
		).db_insert()
		self.assertEqual(receipts_wanted(), bool(others))
		frappe.db.set_value("EDA Destination", name, "request_receipts", 1)
		self.assertTrue(receipts_wanted())
		frappe.db.set_value("EDA Destination", name, "enabled", 0)
		self.assertEqual(receipts_wanted(), bool(others))


class TestReceiptThroughTheBroker(ReceiptCase):
	"""The site answers itself through the broker as one user: a trusted network (the broker-proven
	sender is ``TestReceiptSenders``'s and test_two_sites_trust's)."""

	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		# In EDA Settings, committed: the worker's handler thread opens the site afresh.
		cls.saved_trusted_network = frappe.db.get_single_value("EDA Settings", "trusted_network")
		frappe.db.set_single_value("EDA Settings", "trusted_network", 1)
		frappe.db.commit()

	@classmethod
	def tearDownClass(cls):
		frappe.db.rollback()
		frappe.db.set_single_value("EDA Settings", "trusted_network", cls.saved_trusted_network or 0)
		frappe.db.commit()
		super().tearDownClass()

	def tearDown(self):
		frappe.db.rollback()
		frappe.db.delete(RECEIPT, {"subscription": ["like", f"{self.prefix}%"]})
		frappe.db.delete(MESSAGE, {"routing_key": ["like", f"{self.prefix}%"]})
		frappe.db.delete(MESSAGE, {"queue": ["like", f"{self.prefix}%"]})
		frappe.db.delete(MESSAGE, {"exchange": ["like", f"{self.prefix}%"]})
		frappe.db.delete("EDA Worker", {"queues": ["like", f"%{self.prefix}%"]})
		frappe.db.delete("ToDo", {"description": ["like", f"{self.prefix}%"]})
		frappe.db.commit()

	def test_a_receipt_sent_back_through_rabbitmq_is_recorded_by_the_worker(self):
		exchange, queue = f"{self.prefix}.events", f"{self.prefix}.receipts"
		sent = self.sent()
		# The subscriber's side (here the same site): its receipt, queued in its transaction.
		send_receipt(
			sent, f"{self.prefix}-sub", ReceiptOutcome.APPLIED, document="TD-REMOTE", exchange=exchange
		)
		frappe.db.commit()
		[outbox] = self.outbox_receipts(sent)
		self.assertEqual(outbox.routing_key, addressing.receipt_key_for(self.site))

		default_registry.add(receipt_subscription(exchange=exchange, queue=queue))
		self.addCleanup(default_registry.remove, queue)
		name = receipt_name(sent.id, self.site, f"{self.prefix}-sub")

		def recorded(stats):
			frappe.db.rollback()  # a fresh snapshot: the worker commits on its own connection
			return bool(frappe.db.exists(RECEIPT, name)) or time.monotonic() > deadline

		settings = load_settings()
		with BrokerConnection(settings.broker) as connection:
			worker = build_worker(connection, [queue], heartbeat_every=5)
			try:
				worker.declare()
				publisher = Publisher(connection, exchange=exchange, source=self.site)
				publisher.publish(outbox.envelope, exchange=outbox.exchange, routing_key=outbox.routing_key)
				publisher.close()
				deadline = time.monotonic() + 30
				stats = worker.run(until=recorded)
			finally:
				worker.close()
				declarer = TopologyDeclarer(connection)
				declarer.delete(topology_for(worker.subscriptions, settings.retry))
				declarer.close()

		self.assertEqual(stats.processed, 1)
		row = frappe.db.get_value(RECEIPT, name, "*", as_dict=True)
		self.assertIsNotNone(row, "the worker recorded the receipt")
		self.assertEqual((row.outcome, row.document, row.server), ("Applied", "TD-REMOTE", self.site))
		self.assertEqual(row.eda_message, self.message_name(sent))
		self.assertEqual((row.reference_doctype, row.reference_name), ("ToDo", self.todo.name))
		incoming = frappe.db.get_value(
			MESSAGE, {"queue": queue, "direction": "Incoming"}, ["status", "message_type"], as_dict=True
		)
		self.assertEqual(
			(incoming.status, from_column("message_type", incoming.message_type)), ("Processed", RECEIPT_TYPE)
		)
		self.assertEqual(
			json.loads(frappe.db.get_value(MESSAGE, outbox.name, "payload"))["type"], RECEIPT_TYPE
		)


class TestReceiptSenders(ReceiptCase):
	"""Only a server the message was addressed to answers for it, and only for itself: the receipt's
	broker-validated sender (the delivery's user_id) decides, through the worker's real processor."""

	def deliver_receipt(self, receipt, user_id):
		registry = HandlerRegistry()
		registry.add(receipt_subscription(queue=f"{self.prefix}.receipts"))
		processor = DeliveryProcessor(registry, ReceiptingStore(commit=False))
		key = addressing.receipt_key_for(self.site)
		delivery = Delivery(f"{self.prefix}.receipts", key, encode(receipt), "eda.events", user_id=user_id)
		[decision] = processor.process([delivery])
		return decision

	def test_the_addressed_server_answers_for_itself(self):
		sent = self.sent(**{addressing.TO: ["wh1.localhost"]})
		decision = self.deliver_receipt(receipt_message(sent.id), user_id="wh1.localhost")
		self.assertEqual(decision.outcome.value, "processed")
		self.assertEqual([r.server for r in self.receipts(sent)], ["wh1.localhost"])

	def test_a_receipt_for_another_server_or_for_a_message_sent_elsewhere_is_refused(self):
		sent = self.sent(**{addressing.TO: ["wh1.localhost"]})
		for receipt, user_id, why in (
			(receipt_message(sent.id), "wh2.localhost", "a server answers only for itself"),
			(
				receipt_message(sent.id, server="wh2.localhost"),
				"wh2.localhost",
				"which was sent to wh1.localhost",
			),
			(receipt_message(sent.id), None, "no broker-validated sender"),
		):
			decision = self.deliver_receipt(receipt, user_id)
			self.assertEqual(decision.outcome.value, "dead", why)
			self.assertIn(why, decision.error.error)
		self.assertEqual(self.receipts(sent), [])


class TestNoReceiptForStrangers(ReceiptCase):
	"""A subscription refuses a message nothing proves came from its source: its reply-to is a stranger's
	instruction, so no receipt goes anywhere (a failure of a proven message is receipted as before)."""

	def test_a_refused_stranger_gets_no_receipt(self):
		from frappe_eda.messaging.trust import SenderPolicy

		queue = f"{self.prefix}.items"
		registry = HandlerRegistry()
		handler = subscription_handler_name(f"{self.prefix}-sub")
		policy = SenderPolicy.only(["head.localhost"])
		registry.add(Subscription(queue, ("item.*",), "erp.events", lambda m: None, handler, senders=policy))
		processor = DeliveryProcessor(registry, ReceiptingStore(commit=False))
		message = Message(
			type="item.changed",
			payload={"name": "ITEM-9"},
			source="head.localhost",
			headers={addressing.REPLY_TO: addressing.receipt_key_for("head.localhost")},
		)
		body = encode(message)
		[decision] = processor.process(
			[Delivery(queue, "item.changed", body, "erp.events", user_id="wh2.localhost")]
		)
		self.assertEqual(decision.outcome.value, "dead")
		self.assertTrue(decision.error.exception_type.endswith("WrongSender"))
		self.assertEqual(self.outbox_receipts(message), [])
