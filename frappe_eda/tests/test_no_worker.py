# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""A desk job that nobody will run is said to be waiting for a worker: ``replay_job_state`` of a queued
job says whether a background worker listens on the desk's queue (the desk then shows what to start; the
browser suite's ``--no-worker`` run checks that dialog). Checked with no worker, then with a real
``bench worker`` started here."""

import os
import subprocess
import sys
import time

import frappe
from frappe.tests.utils import FrappeTestCase

from frappe_eda.desk import api, replay
from frappe_eda.frappe_eda.doctype.eda_message.test_desk_api import take_job
from frappe_eda.messaging.store import Status
from frappe_eda.stores.doctype_store import DocTypeStore
from frappe_eda.testing.store_contract import incoming


class TestNoWorker(FrappeTestCase):
	def tearDown(self):
		frappe.db.rollback()

	def queued_state(self):
		record = incoming(f"eda-nw-{frappe.generate_hash(length=6)}", "eda-nw.work", status=Status.DEAD)
		DocTypeStore(commit=False).save([record])
		name = frappe.db.get_value("EDA Message", {"message_id": record.message_id})
		job_id = api.replay_messages(names=[name])["job_id"]
		try:
			return api.replay_job_state(job_id)
		finally:
			take_job(job_id)  # nobody runs it

	def test_a_queued_job_says_whether_a_worker_listens(self):
		if replay.worker_listening():
			self.skipTest("a background worker runs for this bench: stop it to run this test")
		state = self.queued_state()
		self.assertEqual((state["status"], state["worker"]), ("queued", False))

		worker = subprocess.Popen(
			[sys.executable, "-m", "frappe.utils.bench_helper", "frappe", "worker", "--queue", replay.QUEUE],
			cwd=frappe.local.sites_path,
			stdout=subprocess.DEVNULL,
			stderr=subprocess.DEVNULL,
			env={**os.environ},
		)
		try:
			deadline = time.monotonic() + 60
			while not replay.worker_listening() and time.monotonic() < deadline:
				time.sleep(0.5)
			self.assertTrue(replay.worker_listening(), "the worker started here never registered")
			state = self.queued_state()
			self.assertEqual((state["status"], state["worker"]), ("queued", True))
		finally:
			worker.terminate()
			worker.wait(timeout=60)
