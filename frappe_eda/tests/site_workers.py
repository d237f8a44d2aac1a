# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""What ``test_site_faults`` and ``test_competing_workers`` share: real ``bench eda worker`` processes
consuming a queue of their own on this site, with the handler of ``site_fault_handlers`` (one ToDo per
message id), and the EDA Settings they read pointed at the machine's RabbitMQ.

The tests commit (the workers run in other processes), so everything here puts back or deletes what it
changed. They poll with ``two_sites.wait_for``, re-exported here.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import frappe
from frappe.utils.password import get_decrypted_password, set_encrypted_password

from frappe_eda.consumer import spawn_worker
from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.tests import two_sites
from frappe_eda.tests.two_sites import wait_for  # noqa: F401  (re-exported: one way to poll for these tests)

MACHINE_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"


def broker_url() -> str:
	"""The broker the workers will use: ``eda_amqp_url`` in site_config.json wins over the form (a site
	set up as the README's two-site tests say has one, with a vhost of its own), else the machine's
	RabbitMQ, which ``use_broker`` puts in the form. The tests look at the same broker as the workers."""
	return frappe.conf.get("eda_amqp_url") or MACHINE_BROKER


TODO_PREFIX = "eda-fault "  # the handler's ToDo: "eda-fault MESSAGE_ID"


# --- EDA Settings -----------------------------------------------------------------------------------


def use_broker(broker_nodes: str | None = None) -> dict:
	"""Enable EDA Settings on the machine's RabbitMQ (with ``broker_nodes``, that node list too),
	committed: the workers read them at start (``broker_url``: site_config.json may override the URL).
	What they were, for ``restore_settings``."""
	saved = frappe.get_single("EDA Settings").as_dict()
	saved["amqp_url"] = get_decrypted_password("EDA Settings", "EDA Settings", "amqp_url", False)
	frappe.db.set_single_value("EDA Settings", "enabled", 1)
	set_encrypted_password("EDA Settings", "EDA Settings", MACHINE_BROKER, "amqp_url")  # a Password field
	if broker_nodes is not None:
		frappe.db.set_single_value("EDA Settings", "broker_nodes", broker_nodes)
	frappe.db.commit()
	frappe.clear_document_cache("EDA Settings", "EDA Settings")
	return saved


def restore_settings(saved: dict) -> None:
	frappe.db.set_single_value("EDA Settings", "enabled", saved.get("enabled") or 0)
	frappe.db.set_single_value("EDA Settings", "broker_nodes", saved.get("broker_nodes") or "")
	if saved.get("amqp_url"):
		set_encrypted_password("EDA Settings", "EDA Settings", saved["amqp_url"], "amqp_url")
	else:
		frappe.db.delete("__Auth", {"doctype": "EDA Settings", "fieldname": "amqp_url"})
	frappe.db.commit()
	frappe.clear_document_cache("EDA Settings", "EDA Settings")


# --- the workers and the broker -----------------------------------------------------------------------


def start_worker(queue: str, exchange: str, log_name: str) -> Any:
	"""A worker consuming ``queue`` (bound to ``exchange``) with the fault handler; its output kept for a
	failure's post-mortem in the site's own logs folder (not the bench's sites/) as ``log_name``."""
	log = open(frappe.get_site_path("logs", log_name), "wb")
	env = {
		"EDA_HANDLER_MODULES": "frappe_eda.tests.site_fault_handlers",
		"EDA_SITE_FAULT_QUEUE": queue,
		"EDA_SITE_FAULT_EXCHANGE": exchange,
	}
	return spawn_worker(env, log)


def consumers(queue: str) -> int:
	"""The workers consuming ``queue`` now (0 before any declared it)."""
	return two_sites.consumers(broker_url(), queue)


def delete_topology(queue: str, exchange: str) -> None:
	"""The queue with its dead-letter and retry queues (the handler's delays), and the exchange."""
	with BrokerConnection(BrokerSettings(url=broker_url())) as connection:
		channel = connection.channel()
		for name in (queue, f"{queue}.dead", f"{queue}.retry.200ms", f"{queue}.retry.500ms"):
			channel.queue_delete(name)
		channel.exchange_delete(exchange)


# --- the evidence ---------------------------------------------------------------------------------------


def outcomes(queue: str) -> dict[str, str]:
	"""Each message's EDA Message status on ``queue``, by message id."""
	frappe.db.rollback()  # a fresh snapshot: the worker commits on its own connection
	rows = frappe.get_all("EDA Message", filters={"queue": queue}, fields=["message_id", "status"])
	return {r.message_id: r.status for r in rows}


def todos() -> Counter:
	"""How many ToDos the handler wrote, by message id."""
	return Counter(
		d.replace(TODO_PREFIX, "")
		for d in frappe.get_all(
			"ToDo", filters={"description": ["like", f"{TODO_PREFIX}%"]}, pluck="description"
		)
	)


def delete_records(queue: str, exchange: str) -> None:
	"""The EDA Messages and Errors of the queue (and those sent to the exchange), and their ToDos."""
	ids = frappe.get_all("EDA Message", filters={"queue": queue}, pluck="message_id")
	frappe.db.delete("EDA Error", {"queue": queue})
	frappe.db.delete("EDA Message", {"queue": queue})
	frappe.db.delete("EDA Message", {"exchange": exchange})
	for message_id in ids:
		frappe.db.delete("ToDo", {"description": f"{TODO_PREFIX}{message_id}"})
