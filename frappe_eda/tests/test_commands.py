# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""``bench --site SITE eda ...`` as a user runs it: each test starts the real command in a child process
(``python -m frappe.utils.bench_helper frappe --site SITE eda ...`` from the sites folder, what ``bench``
runs), on the site's database and the broker its settings name (``eda_amqp_url`` in site_config.json).

The child reads the database on its own connection, so these tests commit what they make and delete it.
"""

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timezone

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.consumer import eda_command
from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.store import Status
from frappe_eda.messaging.topology import (
	Exchange,
	Queue,
	Topology,
	TopologyDeclarer,
	dead_letter_queue,
	retry_queue,
)
from frappe_eda.settings import load_settings
from frappe_eda.stores.doctype_store import DocTypeStore
from frappe_eda.testing.store_contract import incoming

HANDLERS = "frappe_eda.tests.cli_handlers"


class CommandCase(FrappeTestCase):
	def setUp(self):
		self.prefix = f"eda-cli-{frappe.generate_hash(length=8)}"
		self.queue = f"{self.prefix}.work"
		self.exchange = f"{self.prefix}.events"

	def tearDown(self):
		frappe.db.rollback()
		frappe.db.delete("EDA Message", {"queue": ["like", f"{self.prefix}%"]})
		frappe.db.commit()
		with BrokerConnection(load_settings().broker) as connection:
			declarer = TopologyDeclarer(connection)
			names = [self.queue, dead_letter_queue(self.queue)]
			names += [retry_queue(self.queue, delay) for delay in (0.5, 2)]
			declarer.delete(Topology((Exchange(self.exchange),), tuple(Queue(n) for n in names)))
			declarer.close()

	def env(self, handlers: bool = True) -> dict[str, str]:
		env = {k: v for k, v in os.environ.items() if k != "EDA_HANDLER_MODULES"}
		if handlers:
			env.update(EDA_HANDLER_MODULES=HANDLERS, EDA_CLI_TEST_PREFIX=self.prefix)
		return env

	def command(self, *args: str) -> list[str]:
		return eda_command(*args)

	def bench(self, *args: str, handlers: bool = True) -> subprocess.CompletedProcess:
		return subprocess.run(
			self.command(*args),
			cwd=os.path.abspath(frappe.local.sites_path),
			env=self.env(handlers),
			capture_output=True,
			text=True,
			timeout=180,
		)

	def store(self, *records) -> list[str]:
		DocTypeStore(commit=False).save(list(records))
		frappe.db.commit()
		return [
			frappe.db.get_value(
				"EDA Message", {"message_id": _column(r.message_id), "queue": r.queue}, "name"
			)
			for r in records
		]


def _column(value: str) -> str:
	from frappe_eda.stores.doctype_columns import to_column

	return to_column("message_id", value)


class TestWorkerCommand(CommandCase):
	def run_worker_until(self, seen: str, handlers: bool = True) -> tuple[list[str], str, str, int]:
		"""``bench eda worker`` until its stdout shows ``seen`` (or it exits), then SIGTERM: the lines
		printed, what was printed by then, stderr, and the exit code."""
		with tempfile.TemporaryFile("w+") as errors:
			child = subprocess.Popen(
				self.command("worker"),
				cwd=os.path.abspath(frappe.local.sites_path),
				env=self.env(handlers),
				stdout=subprocess.PIPE,
				stderr=errors,
				text=True,
			)
			lines: list[str] = []
			reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
			reader.start()
			deadline = time.monotonic() + 90
			while time.monotonic() < deadline and not any(seen in line for line in lines):
				if child.poll() is not None:
					break
				time.sleep(0.2)
			started = "".join(lines)
			if child.poll() is None:
				time.sleep(1)  # any second announcement would come now
				child.send_signal(signal.SIGTERM)
			child.wait(timeout=60)
			reader.join(timeout=10)
			errors.seek(0)
			return lines, started, errors.read(), child.returncode

	def test_worker_says_what_it_consumes_once_and_what_it_did_on_stop(self):
		lines, started, stderr, _code = self.run_worker_until(self.queue)
		output = "".join(lines)
		self.assertIn(
			self.queue,
			started,
			f"nothing about the queue at start-up; stdout {output!r}, stderr {stderr[-2000:]!r}",
		)
		self.assertIn(frappe.local.site, started)
		url = load_settings().broker.redacted_url()
		self.assertIn(url, started)
		self.assertIn(":***@", url)
		self.assertNotIn(":guest@", output)
		line = next(line for line in lines if self.queue in line)
		self.assertIn(self.exchange, line)
		self.assertIn(f"{self.prefix}.created", line)
		self.assertIn(f"{self.prefix}.#", line)
		self.assertIn(f"{HANDLERS}.on_created", line)
		self.assertIn("relaying the outbox: yes", started)
		self.assertEqual(output.count("eda worker for site"), 1, output)
		self.assertRegex(output, r"stopped: 0 processed, 0 duplicates, 0 retried, 0 dead")

	def test_worker_of_a_site_that_only_publishes_starts_relaying(self):
		"""A head office with rules and nothing to consume (no handlers, subscriptions or receipts) still
		runs its worker: it relays the outbox and answers reconciliation requests as a source."""
		from frappe_eda.outbox.rules import clear_rules_cache
		from frappe_eda.replication import reconcile

		rule = frappe.get_doc(
			{
				"doctype": "EDA Event Rule",
				"document_type": "ToDo",
				"event": "after_insert",
				"exchange": self.exchange,
				"condition": "False",  # never publishes: other tests' ToDos stay out of this exchange
			}
		).insert()
		frappe.db.commit()
		clear_rules_cache()
		settings = load_settings()
		requests = reconcile._queue(reconcile.KEY_PREFIX, frappe.local.site, self.exchange, settings.exchange)
		registry = HandlerRegistry()
		reconcile.add_to_registry(registry)
		[served] = [s for s in registry if s.queue == requests]
		try:
			lines, started, stderr, code = self.run_worker_until(requests, handlers=False)
		finally:
			frappe.delete_doc("EDA Event Rule", rule.name, force=True)
			frappe.db.commit()
			clear_rules_cache()
			tiers = served.retry_policy(settings.retry).tiers()
			names = [requests, dead_letter_queue(requests), *(retry_queue(requests, d) for d in tiers)]
			with BrokerConnection(settings.broker) as connection:
				declarer = TopologyDeclarer(connection)
				declarer.delete(Topology((), tuple(Queue(n) for n in names)))
				declarer.close()
		self.assertIn("relaying the outbox: yes", started, f"stderr {stderr[-2000:]!r}")
		self.assertIn(requests, started)
		self.assertEqual(code, 0, "".join(lines))

	def test_worker_without_handlers_names_the_hook_and_fails(self):
		from frappe_eda.outbox.rules import all_rules
		from frappe_eda.replication.receipts import receipts_wanted
		from frappe_eda.replication.subscriptions import enabled_specs

		if frappe.get_hooks("eda_handlers"):  # e.g. the worked example, myshop, is installed here
			self.skipTest(f"an installed app lists handlers: {frappe.get_hooks('eda_handlers')}")
		if all_rules() or enabled_specs() or receipts_wanted():
			self.skipTest("this site has rules, subscriptions or receipts: its worker has work to do")
		done = self.bench("worker", handlers=False)
		self.assertNotEqual(done.returncode, 0)
		self.assertIn("`eda_handlers` hook", done.stderr)
		self.assertNotIn("Traceback", done.stderr)


class TestStatusCommand(CommandCase):
	def test_status_prints_desk_labels_and_every_queue_tier(self):
		self.store(incoming(f"{self.prefix}-d", self.queue, status=Status.DEAD))
		done = self.bench("status")
		self.assertEqual(done.returncode, 0, done.stderr)
		self.assertRegex(done.stdout, r"\n  Incoming\s+Dead\s+\d+")
		# the status column holds the desk's labels (a queue's name may end in ".dead")
		self.assertNotRegex(done.stdout, r"\n  \S+\s+(dead|processed)\b")
		for name in (
			self.queue,
			retry_queue(self.queue, 0.5),
			retry_queue(self.queue, 2),
			dead_letter_queue(self.queue),
		):
			self.assertRegex(done.stdout, rf"\n  {re.escape(name)}\s+(missing|\d+)\n")


class TestReplayCommand(CommandCase):
	def test_status_filter_in_any_case(self):
		(name,) = self.store(incoming(f"{self.prefix}-d", self.queue, status=Status.DEAD))
		for value in ("dead", "Dead", "DEAD"):
			done = self.bench("replay", "--status", value, "--queue", self.queue, "--dry-run")
			self.assertEqual(done.returncode, 0, done.stderr)
			self.assertIn(f"would replay {name}", done.stdout)
			self.assertIn("1 would be replayed", done.stdout)

	def test_replay_by_message_id_html_in_it(self):
		message_id = f'{self.prefix}-<b>&amp;"x"'
		(name,) = self.store(incoming(message_id, self.queue, status=Status.DEAD))
		with BrokerConnection(load_settings().broker) as connection:
			declarer = TopologyDeclarer(connection)
			declarer.declare(Topology(queues=(Queue(self.queue),)))
			declarer.close()
		done = self.bench("replay", message_id)
		self.assertEqual(done.returncode, 0, done.stderr)
		self.assertIn(f"{name}: sent", done.stdout)
		self.assertIn("1 of 1 replayed", done.stdout)
		by_name = self.bench("replay", name, "--dry-run")
		self.assertIn(f"would replay {name}", by_name.stdout)

	def test_refusal_names_the_option(self):
		(name,) = self.store(incoming(f"{self.prefix}-p", self.queue, status=Status.PROCESSED))
		done = self.bench("replay", f"{self.prefix}-p")
		self.assertEqual(done.returncode, 0, done.stderr)
		self.assertIn(f"{name}: not sent", done.stdout)
		self.assertIn("--force", done.stdout)
		self.assertNotIn("pass force", done.stdout)
		self.assertIn("0 of 1 replayed", done.stdout)

	def test_unknown_name_or_id_is_an_error(self):
		(name,) = self.store(incoming(f"{self.prefix}-d", self.queue, status=Status.DEAD))
		unknown = f"{self.prefix}-nobody"
		done = self.bench("replay", name, unknown)
		self.assertNotEqual(done.returncode, 0)
		self.assertIn(unknown, done.stderr)
		self.assertNotIn("replayed", done.stdout)
		self.assertEqual(frappe.db.get_value("EDA Message", name, "status"), "Dead")  # nothing was sent

	def test_ambiguous_id_asks_for_the_queue(self):
		message_id = f"{self.prefix}-two"
		other = f"{self.prefix}.other"
		names = self.store(
			incoming(message_id, self.queue, status=Status.DEAD),
			incoming(message_id, other, status=Status.DEAD),
		)
		done = self.bench("replay", message_id, "--dry-run")
		self.assertNotEqual(done.returncode, 0)
		self.assertIn("--queue", done.stderr)
		chosen = self.bench("replay", message_id, "--queue", other, "--dry-run")
		self.assertEqual(chosen.returncode, 0, chosen.stderr)
		self.assertIn(f"would replay {names[1]}", chosen.stdout)

	def test_since_and_until_are_utc_and_take_an_offset(self):
		def at(hour_utc: int, day: int) -> datetime:
			return datetime(2025 + (day == 1), 1 if day == 1 else 12, day, hour_utc, tzinfo=timezone.utc)

		early, inside, late = self.store(
			incoming(f"{self.prefix}-early", self.queue, status=Status.DEAD, created_at=at(21, 31)),
			incoming(f"{self.prefix}-inside", self.queue, status=Status.DEAD, created_at=at(23, 31)),
			incoming(f"{self.prefix}-late", self.queue, status=Status.DEAD, created_at=at(2, 1)),
		)
		done = self.bench(
			"replay",
			"--queue",
			self.queue,
			"--since",
			"2026-01-01T00:30:00+02:00",  # 22:30 UTC on the 31st
			"--until",
			"2026-01-01T03:00:00+02:00",  # 01:00 UTC
			"--dry-run",
		)
		self.assertEqual(done.returncode, 0, done.stderr)
		self.assertIn(f"would replay {inside}", done.stdout)
		self.assertNotIn(early, done.stdout)
		self.assertNotIn(late, done.stdout)
		self.assertIn("1 would be replayed", done.stdout)
		naive = self.bench("replay", "--queue", self.queue, "--since", "2025-12-31 22:30", "--dry-run")
		self.assertIn("2 would be replayed", naive.stdout)  # no offset: UTC
		bad = self.bench("replay", "--since", "yesterday", "--dry-run")
		self.assertEqual(bad.returncode, 2)
		self.assertIn("--since", bad.stderr)
		helped = self.bench("replay", "--help")
		self.assertEqual(re.sub(r"\s+", " ", helped.stdout).count("in UTC"), 2, helped.stdout)
