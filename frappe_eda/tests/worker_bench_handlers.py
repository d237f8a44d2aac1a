"""Handlers of the Frappe worker benchmark (``frappe_eda.consumer.benchmark``): one that inserts a ToDo
per message, one that does nothing. Queues and exchange come from the environment, so each run has its
own."""

import os

import frappe

from frappe_eda.messaging import subscribe

EXCHANGE = os.environ.get("EDA_WORKER_BENCH_EXCHANGE", "eda-worker-bench.events")
PREFIX = os.environ.get("EDA_WORKER_BENCH_PREFIX", "eda-worker-bench")


@subscribe("insert.#", queue=f"{PREFIX}.insert", exchange=EXCHANGE)
def insert_todo(message):
	frappe.get_doc({"doctype": "ToDo", "description": message.payload["description"]}).insert()


@subscribe("noop.#", queue=f"{PREFIX}.noop", exchange=EXCHANGE)
def do_nothing(message):
	pass
