"""frappe_eda's README walkthrough ("Your first handler, step by step"), step by step, in a real site.

The same objects and commands a newcomer uses: ``myshop.configure.configure`` (the destination and the
rule the README creates in the desk), ``bench --site SITE eda worker`` as a child process (it finds
``myshop.eda_handlers`` through this app's hooks, and relays the outbox), ToDos saved and committed as
the desk does, ``bench --site SITE eda status`` and ``eda replay <message id>``. The worker works on its
own database connection, so the test commits what it makes and deletes it afterwards, and the broker it
uses is the one the site's settings name (``eda_amqp_url`` in site_config.json wins over the form).
"""

import os
import re
import subprocess
import tempfile
import time

import frappe
from frappe.tests.utils import FrappeTestCase
from frappe_eda.consumer import eda_command, spawn_worker
from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.topology import dead_letter_queue, retry_queue
from frappe_eda.settings import load_settings

from myshop.configure import configure

QUEUE, EXCHANGE, ROUTING_KEY = "myshop.notes", "myshop.events", "myshop.todo.after_insert"


class TestWalkthrough(FrappeTestCase):
	def setUp(self):
		self.title = f"Call Bob {frappe.generate_hash(length=6)}"
		self.enabled = frappe.db.get_single_value("EDA Settings", "enabled")
		frappe.db.set_single_value("EDA Settings", "enabled", 1)
		self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
		self.worker = None

	def tearDown(self):
		if self.worker is not None:
			self.worker.terminate()
			self.worker.wait(timeout=60)
		self.log.close()
		os.unlink(self.log.name)
		frappe.db.rollback()
		todos = frappe.get_all("ToDo", filters={"description": ["like", f"%{self.title}%"]}, pluck="name")
		frappe.db.delete("ToDo", {"name": ["in", todos or [""]]})
		frappe.db.delete("Note", {"title": ["like", f"{self.title}%"]})
		for name in frappe.get_all(
			"EDA Message", filters={"reference_name": ["in", todos or [""]]}, pluck="name"
		):
			frappe.db.delete(
				"EDA Error", {"message_id": frappe.db.get_value("EDA Message", name, "message_id")}
			)
			frappe.db.delete("EDA Message", name)
		frappe.db.delete("EDA Message", {"queue": QUEUE})
		frappe.db.delete("EDA Error", {"queue": QUEUE})
		frappe.db.delete("EDA Event Rule", {"destination": "myshop"})
		frappe.db.delete("EDA Destination", "myshop")
		frappe.db.set_single_value("EDA Settings", "enabled", self.enabled)
		frappe.db.commit()
		with BrokerConnection(load_settings().broker) as connection:
			channel = connection.channel()
			for name in (QUEUE, dead_letter_queue(QUEUE)):
				channel.queue_delete(name)
			for delay in load_settings().retry.tiers():
				channel.queue_delete(retry_queue(QUEUE, delay))
			channel.exchange_delete(EXCHANGE)

	def test_the_readme_walkthrough(self):
		# Step: the destination and the rule (what the README fills in on the two forms).
		configure()
		configure()  # twice changes nothing
		self.assertEqual(frappe.db.count("EDA Event Rule", {"destination": "myshop"}), 1)
		frappe.db.commit()

		# Step: start the worker; its first lines say what it consumes.
		self.worker = spawn_worker({}, output=self.log)
		banner = self.wait_for_output(f"{QUEUE} <- exchange {EXCHANGE}")
		self.assertIn(
			f"{QUEUE} <- exchange {EXCHANGE} (topic) with {ROUTING_KEY} -> myshop.eda_handlers.note_from_todo",
			banner,
		)
		self.assertIn("relaying the outbox: yes", banner)

		# Step: a new ToDo becomes a Note.
		first = self.new_todo()
		sent = self.wait_for_message(first, "Outgoing", ("Published",))
		self.assertEqual((sent.routing_key, sent.exchange), (ROUTING_KEY, EXCHANGE))
		received = self.wait_for_incoming(sent.message_id, ("Processed",))
		self.assertEqual(frappe.db.count("Note", {"title": self.title}), 1)
		self.assertEqual(received.handler, "myshop.eda_handlers.note_from_todo")

		# Step: a second ToDo with the same text fails for good: Dead, with its EDA Error.
		second = self.new_todo()
		sent = self.wait_for_message(second, "Outgoing", ("Published",))
		dead = self.wait_for_incoming(sent.message_id, ("Dead",))
		self.assertIn("already exists", dead.last_error)
		error = frappe.get_all(
			"EDA Error", filters={"message_id": sent.message_id}, fields=["exception_type", "resolved"]
		)
		self.assertEqual(
			[(e.exception_type, e.resolved) for e in error],
			[("frappe_eda.messaging.errors.PermanentFailure", 0)],
		)
		status = self.bench("status")
		self.assertEqual(status.returncode, 0, status.stdout + status.stderr)
		self.assertRegex(status.stdout, rf"{re.escape(dead_letter_queue(QUEUE))}\s+1\b")
		self.assertRegex(status.stdout, r"Incoming\s+Dead\s+\d+")

		# Step: fix the cause (rename the first Note), then replay by message id.
		note = frappe.get_doc("Note", {"title": self.title})
		note.title = f"{self.title} (first)"
		note.save()
		frappe.db.commit()
		replay = self.bench("replay", sent.message_id)
		self.assertEqual(replay.returncode, 0, replay.stdout + replay.stderr)
		self.assertIn("1 of 1 replayed", replay.stdout)
		self.assertIn("1 dead copies removed", replay.stdout)
		done = self.wait_for_incoming(sent.message_id, ("Processed",))
		self.assertEqual(done.replay_count, 1)
		self.assertEqual(frappe.db.count("Note", {"title": self.title}), 1)

		# The broker and the records agree afterwards: no dead copy left, the failure resolved.
		self.assertTrue(self.wait(lambda: frappe.db.get_value("EDA Message", done.name, "resolved")))
		self.assertEqual(
			frappe.get_all("EDA Error", filters={"message_id": sent.message_id}, pluck="resolved"), [1]
		)
		status = self.bench("status")
		self.assertRegex(status.stdout, rf"{re.escape(dead_letter_queue(QUEUE))}\s+0\b")

		# Unknown ids are an error, not "0 of 0 replayed".
		unknown = self.bench("replay", "no-such-message")
		self.assertNotEqual(unknown.returncode, 0)
		self.assertIn("no-such-message", unknown.stdout + unknown.stderr)

	# --- helpers ------------------------------------------------------------------------------------

	def new_todo(self) -> str:
		todo = frappe.get_doc({"doctype": "ToDo", "description": f"<p>{self.title}</p>"}).insert()
		frappe.db.commit()  # the relay sends after commit
		return todo.name

	def bench(self, *args: str) -> subprocess.CompletedProcess:
		return subprocess.run(
			eda_command(*args),
			cwd=os.path.abspath(frappe.local.sites_path),
			capture_output=True,
			text=True,
			timeout=180,
		)

	def wait(self, check, timeout: float = 60):
		deadline = time.monotonic() + timeout
		while time.monotonic() < deadline:
			frappe.db.rollback()  # a fresh snapshot of what the worker committed
			value = check()
			if value:
				return value
			if self.worker is not None and self.worker.poll() is not None:
				self.fail(f"the worker exited: {self.output()}")
			time.sleep(0.2)
		self.fail(f"timed out; worker output:\n{self.output()}")

	def wait_for_output(self, text: str) -> str:
		return self.wait(lambda: self.output() if text in self.output() else None)

	def wait_for_message(self, todo: str, direction: str, statuses: tuple[str, ...]):
		return self.wait(
			lambda: frappe.db.get_value(
				"EDA Message",
				{
					"reference_doctype": "ToDo",
					"reference_name": todo,
					"direction": direction,
					"status": ["in", statuses],
				},
				["name", "message_id", "routing_key", "exchange", "status"],
				as_dict=True,
			)
		)

	def wait_for_incoming(self, message_id: str, statuses: tuple[str, ...]):
		return self.wait(
			lambda: frappe.db.get_value(
				"EDA Message",
				{
					"message_id": message_id,
					"direction": "Incoming",
					"queue": QUEUE,
					"status": ["in", statuses],
				},
				["name", "status", "handler", "last_error", "replay_count", "resolved"],
				as_dict=True,
			)
		)

	def output(self) -> str:
		with open(self.log.name) as f:
			return f.read()
