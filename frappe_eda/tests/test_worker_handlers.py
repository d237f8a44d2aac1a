# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""The Frappe worker against handlers that misbehave the way real Frappe code does: they commit or roll
back the worker's transaction, set ``frappe.flags``, print messages. A real worker (in this process, on
its own handler thread) on the machine's RabbitMQ, the site's database, and the broker the site's
settings name (``eda_amqp_url`` in site_config.json wins over the form).

The worker commits on its own connection, so these tests commit too and delete what they made.
"""

import time

import frappe
from frappe.tests.utils import FrappeTestCase

import frappe_eda
from frappe_eda.consumer import build_worker
from frappe_eda.desk.notifications import site_notifier
from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.errors import HandlerCommitted, HandlerEndedTransaction, TransactionLost
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import default_registry
from frappe_eda.messaging.topology import Exchange, Topology, TopologyDeclarer, dead_letter_queue, retry_queue
from frappe_eda.outbox.relay import drain
from frappe_eda.outbox.rules import clear_rules_cache
from frappe_eda.settings import load_settings
from frappe_eda.stores.doctype_store import DocTypeStore
from frappe_eda.testing.store_contract import incoming

MANAGER = "eda-handler-tests@example.com"
SETTINGS = ("enabled", "max_attempts", "retry_delays", "notify_role", "worker_user")


class WorkerCase(FrappeTestCase):
	def setUp(self):
		self.prefix = f"eda-h-{frappe.generate_hash(length=8)}"
		self.exchange, self.queue = f"{self.prefix}.events", f"{self.prefix}.work"
		self.saved = frappe.get_single("EDA Settings").as_dict()
		frappe.db.set_single_value(
			"EDA Settings",
			{"enabled": 1, "max_attempts": 2, "retry_delays": "0.2", "notify_role": "EDA Manager"},
		)
		_ensure_manager()
		frappe.db.commit()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")

	def tearDown(self):
		frappe.db.rollback()
		if any(subscription.queue == self.queue for subscription in default_registry):
			default_registry.remove(self.queue)
		frappe.db.delete("EDA Error", {"queue": self.queue})
		frappe.db.delete("EDA Message", {"queue": self.queue})
		frappe.db.delete("EDA Message", {"exchange": self.exchange})
		frappe.db.delete("EDA Event Rule", {"exchange": self.exchange})
		frappe.db.delete("ToDo", {"description": ["like", f"{self.prefix}%"]})
		frappe.db.delete("Notification Log", {"for_user": MANAGER})
		frappe.db.set_single_value("EDA Settings", {k: self.saved.get(k) for k in SETTINGS})
		frappe.db.commit()
		frappe.clear_document_cache("EDA Settings", "EDA Settings")
		clear_rules_cache()
		with BrokerConnection(load_settings().broker) as connection:
			channel = connection.channel()
			for name in (self.queue, dead_letter_queue(self.queue), retry_queue(self.queue, 0.2)):
				channel.queue_delete(name)
			channel.exchange_delete(self.exchange)

	def run_worker(self, payloads, done, timeout=30):
		"""Publish ``payloads`` (routing key ``job.<n>``) and run the worker until ``done(stats)`` or
		``timeout`` seconds: a worker stuck in a redelivery loop never goes idle, so idling cannot end it."""
		deadline = time.monotonic() + timeout
		with BrokerConnection(load_settings().broker) as connection:
			worker = build_worker(connection, [self.queue])
			try:
				worker.declare()
				publisher = Publisher(connection, exchange=self.exchange, source="tests")
				for n, payload in enumerate(payloads):
					publisher.publish(f"job.{n}", payload)
				publisher.close()
				stats = worker.run(until=lambda s: done(s) or time.monotonic() > deadline)
			finally:
				worker.close()
		frappe.db.rollback()  # a fresh snapshot: the worker committed on its own connection
		return stats

	def subscribe(self, handler):
		default_registry.subscribe("job.*", queue=self.queue, exchange=self.exchange)(handler)

	def todos(self, what):
		return frappe.db.count("ToDo", {"description": f"{self.prefix} {what}"})

	def record(self, n):
		return frappe.get_all(
			"EDA Message",
			filters={"queue": self.queue, "routing_key": f"job.{n}", "direction": "Incoming"},
			fields=["name", "message_id", "status", "attempts", "last_error"],
		)

	def queue_depth(self, name):
		with BrokerConnection(load_settings().broker) as connection:
			return connection.channel().queue_declare(name, passive=True).method.message_count


class TestHandlersThatEndTheTransaction(WorkerCase):
	def test_a_handler_that_commits_runs_once_is_dead_with_the_reason_and_the_worker_goes_on(self):
		prefix, calls = self.prefix, []

		def book_and_commit(message):
			calls.append(message.id)
			frappe.get_doc({"doctype": "ToDo", "description": f"{prefix} {message.payload['what']}"}).insert()
			if message.payload.get("commit"):
				frappe.db.commit()
				frappe.get_doc({"doctype": "ToDo", "description": f"{prefix} after commit"}).insert()

		self.subscribe(book_and_commit)
		stats = self.run_worker(
			[{"what": "committed", "commit": True}, {"what": "plain"}], lambda s: s.dead + s.processed >= 2
		)

		self.assertEqual((stats.dead, stats.processed, stats.store_failures), (1, 1, 0))
		self.assertEqual(len(calls), 2, "the committing handler ran once, not on every redelivery")
		self.assertEqual(
			(self.todos("committed"), self.todos("after commit"), self.todos("plain")), (1, 1, 1)
		)
		[dead] = self.record(0)
		self.assertEqual((dead.status, dead.attempts), ("Dead", 1))
		self.assertIn("HandlerCommitted", dead.last_error)
		self.assertIn("remove frappe.db.commit()", dead.last_error.lower())
		self.assertIn("book_and_commit", dead.last_error)  # the handler, and where it called commit
		self.assertIn("test_worker_handlers.py:", dead.last_error)
		[error] = frappe.get_all(
			"EDA Error",
			filters={"message_id": dead.message_id, "queue": self.queue},
			fields=["exception_type"],
		)
		self.assertEqual(error.exception_type, "frappe_eda.messaging.errors.HandlerCommitted")
		self.assertTrue(
			frappe.db.exists("Notification Log", {"for_user": MANAGER, "document_name": dead.name})
		)
		[plain] = self.record(1)
		self.assertEqual(plain.status, "Processed")
		self.assertEqual(
			(self.queue_depth(self.queue), self.queue_depth(dead_letter_queue(self.queue))), (0, 1)
		)

	def test_a_handler_that_rolls_back_keeps_nothing_and_is_retried_then_dead(self):
		prefix, calls = self.prefix, []

		def book_and_roll_back(message):
			calls.append(message.id)
			frappe.get_doc({"doctype": "ToDo", "description": f"{prefix} before rollback"}).insert()
			frappe.db.rollback()
			frappe.get_doc({"doctype": "ToDo", "description": f"{prefix} after rollback"}).insert()

		self.subscribe(book_and_roll_back)
		stats = self.run_worker([{}], lambda s: s.dead >= 1)

		self.assertEqual((stats.retried, stats.dead, stats.store_failures), (1, 1, 0))
		self.assertEqual(len(calls), 2, "retried within max_attempts (2), then dead")
		self.assertEqual((self.todos("before rollback"), self.todos("after rollback")), (0, 0))
		[dead] = self.record(0)
		self.assertEqual((dead.status, dead.attempts), ("Dead", 2))
		self.assertIn("frappe.db.rollback()", dead.last_error)
		errors = frappe.get_all(
			"EDA Error",
			filters={"message_id": dead.message_id},
			fields=["exception_type"],
			order_by="attempt",
		)
		self.assertEqual(
			[e.exception_type for e in errors], ["frappe_eda.messaging.errors.HandlerEndedTransaction"] * 2
		)
		self.assertTrue(
			frappe.db.exists("Notification Log", {"for_user": MANAGER, "document_name": dead.name})
		)

	def test_a_handler_that_commits_then_raises_keeps_only_what_it_committed(self):
		prefix = self.prefix

		def commit_then_fail(message):
			frappe.get_doc({"doctype": "ToDo", "description": f"{prefix} committed"}).insert()
			frappe.db.commit()
			frappe.get_doc({"doctype": "ToDo", "description": f"{prefix} after commit"}).insert()
			raise RuntimeError("failed after committing")

		self.subscribe(commit_then_fail)
		stats = self.run_worker([{}], lambda s: s.dead >= 1)

		self.assertEqual((stats.dead, stats.retried), (1, 0), "dead at once: a retry would commit again")
		self.assertEqual((self.todos("committed"), self.todos("after commit")), (1, 0))
		[dead] = self.record(0)
		self.assertIn("HandlerCommitted", dead.last_error)
		[error] = frappe.get_all("EDA Error", filters={"message_id": dead.message_id}, fields=["traceback"])
		self.assertIn("RuntimeError: failed after committing", error.traceback)


class TestEachMessageStartsFresh(WorkerCase):
	def test_flags_messages_settings_and_rules_are_as_fresh_as_in_a_new_request(self):
		prefix, seen, made = self.prefix, [], []

		def observe(message):
			local = frappe.local
			seen.append((local.flags.get("eda_test_leak"), len(local.message_log), frappe.session.user))
			local.flags.eda_test_leak = message.id
			frappe.msgprint(f"{prefix} handled {message.id}")
			todo = {"doctype": "ToDo", "description": f"{prefix} {message.payload['n']}"}
			made.append(frappe.get_doc(todo).insert(ignore_permissions=True).name)

		self.subscribe(observe)
		deadline = time.monotonic() + 30
		with BrokerConnection(load_settings().broker) as connection:
			worker = build_worker(connection, [self.queue])
			try:
				worker.declare()
				publisher = Publisher(connection, exchange=self.exchange, source="tests")
				publisher.publish("job.0", {"n": 0})
				worker.run(until=lambda s: s.processed >= 1 or time.monotonic() > deadline)
				# While the worker runs, the desk names another Worker User and adds an event rule.
				settings = frappe.get_single("EDA Settings")
				settings.worker_user = MANAGER
				settings.flags.ignore_mandatory = True
				settings.save()
				rule = {"doctype": "EDA Event Rule", "document_type": "ToDo", "event": "after_insert"}
				frappe.get_doc({**rule, "exchange": self.exchange}).insert()
				frappe.db.commit()
				publisher.publish("job.1", {"n": 1})
				publisher.close()
				worker.run(until=lambda s: s.processed >= 2 or time.monotonic() > deadline)
			finally:
				worker.close()
		frappe.db.rollback()

		self.assertEqual(len(seen), 2)
		self.assertEqual(seen[0][:2], (None, 0))
		self.assertEqual(seen[1], (None, 0, MANAGER), "no flag or message of the last handler; the new user")
		published = frappe.get_all(
			"EDA Message",
			filters={"exchange": self.exchange, "direction": "Outgoing"},
			pluck="reference_name",
		)
		self.assertEqual(published, [made[1]], "the rule added in the desk applies to the next message")


class TestOneNotifierPerProcess(WorkerCase):
	def setUp(self):
		super().setUp()
		from frappe_eda.desk import notifications

		notifications._site_notifiers.clear()  # as in a new process: no earlier test's failures held back

	def test_the_rate_limit_holds_across_relay_drains(self):
		topology = Topology((Exchange(self.exchange),), (), ())  # no queue bound: every publish is unroutable
		with BrokerConnection(load_settings().broker) as connection:
			TopologyDeclarer(connection).declare(topology)
			for n in range(2):
				frappe_eda.publish("job.unroutable", {"n": n}, exchange=self.exchange)
				frappe.db.commit()
				drain(connection)
		frappe.db.rollback()
		failed = frappe.get_all("EDA Message", filters={"exchange": self.exchange}, pluck="status")
		self.assertEqual(failed, ["Failed", "Failed"])
		bells = frappe.get_all("Notification Log", filters={"for_user": MANAGER}, pluck="subject")
		self.assertEqual(len(bells), 1, f"one alert for two identical failures in two drains: {bells}")
		self.assertIs(site_notifier(load_settings()), site_notifier(load_settings()))


class TestTheStoreSeesTheEnd(FrappeTestCase):
	"""The DocType store's side, without a broker: which ends it can record around, and which not."""

	def setUp(self):
		self.queue = f"eda-h-{frappe.generate_hash(length=8)}"

	def tearDown(self):
		frappe.db.rollback()
		frappe.db.delete("EDA Message", {"queue": self.queue})
		frappe.db.commit()

	def test_a_rollback_that_took_other_work_with_it_still_loses_the_batch(self):
		store = DocTypeStore(commit=True)
		with self.assertRaises(TransactionLost):
			with store.transaction():
				store.save([incoming("earlier", self.queue)])  # another message of the same batch
				with self.assertRaises(HandlerEndedTransaction), store.transaction():
					frappe.db.rollback()
		self.assertEqual(store.processed_ids(self.queue, ["earlier"]), set())

	def test_a_commit_inside_nested_levels_is_reported_once_by_the_outermost_level_it_reaches(self):
		store = DocTypeStore(commit=True)
		with store.transaction():
			with self.assertRaises(HandlerCommitted) as caught, store.transaction():
				with store.transaction():
					store.save([incoming("inner", self.queue)])
					frappe.db.commit()
			store.save([incoming("recorded", self.queue)])
		self.assertIn("frappe.db.commit()", str(caught.exception))
		self.assertEqual(store.processed_ids(self.queue, ["inner", "recorded"]), {"inner", "recorded"})

	def test_savepoints_and_the_stores_own_commits_are_not_mistaken_for_an_end(self):
		store = DocTypeStore(commit=True)
		for n in range(3):  # each outermost commit runs the callbacks of the levels closed before it
			with store.transaction():
				with store.transaction():
					frappe.db.savepoint("handlers_own")
					store.save([incoming(f"undone{n}", self.queue)])
					frappe.db.rollback(save_point="handlers_own")
					store.save([incoming(f"m{n}", self.queue)])
		ids = ["m0", "m1", "m2", "undone0"]
		self.assertEqual(store.processed_ids(self.queue, ids), {"m0", "m1", "m2"})


def _ensure_manager():
	if not frappe.db.exists("User", MANAGER):
		user = frappe.get_doc(
			{"doctype": "User", "email": MANAGER, "first_name": "EDA handler tests", "send_welcome_email": 0}
		)
		user.insert(ignore_permissions=True)
		user.add_roles("EDA Manager")


class TestDeliveriesTheSiteCannotStore(WorkerCase):
	"""Issue #9: an id, a time or a header the EDA Message columns cannot hold made ``save`` raise
	(``Data too long``, ``OverflowError``) after the handler ran, and the worker looped on the batch."""

	def test_unstorable_deliveries_are_dead_at_once_and_good_ones_processed_once(self):
		import json

		import pika

		from frappe_eda.messaging.envelope import Message, encode

		calls = []
		self.subscribe(lambda message: calls.append(message.id))
		good = [Message(f"job.{n}", {"n": n}) for n in range(3)]
		too_long = Message("job.long", {}, id="i" * 300)
		long_once_escaped = Message("job.quoted", {}, id="'" * 60 + "x")  # 61 sent, 361 stored
		too_early = json.loads(encode(Message("job.early", {})))
		too_early["created_at"] = "0001-01-01T00:00:00+14:00"
		big_header = Message("job.header", {})
		bodies = [(encode(m), m.type, None) for m in (good[0], too_long, good[1], long_once_escaped)] + [
			(json.dumps(too_early).encode(), "job.early", None),
			(encode(big_header), big_header.type, {"x-note": "<b>" * 30_000}),  # under the frame size
			(encode(good[2]), good[2].type, None),
		]
		with BrokerConnection(load_settings().broker) as connection:
			worker = build_worker(connection, [self.queue])
			try:
				worker.declare()
				channel = connection.channel()
				for body, key, headers in bodies:
					channel.basic_publish(
						self.exchange,
						key,
						body,
						pika.BasicProperties(
							content_type="application/json", delivery_mode=2, headers=headers
						),
					)
				deadline = time.monotonic() + 30
				stats = worker.run(until=lambda s: s.handled >= 7 or time.monotonic() > deadline)
			finally:
				worker.close()
		frappe.db.rollback()

		self.assertEqual((stats.processed, stats.dead, stats.store_failures), (4, 3, 0))
		self.assertEqual(sorted(calls), sorted([*(m.id for m in good), big_header.id]))
		statuses = frappe.get_all(
			"EDA Message", filters={"queue": self.queue}, fields=["status", "last_error"]
		)
		dead = [s for s in statuses if s.status == "Dead"]
		self.assertEqual(len(dead), 3)
		self.assertTrue(all("UnstorableMessage" in d.last_error for d in dead), dead)
		self.assertEqual(self.queue_depth(dead_letter_queue(self.queue)), 3)
