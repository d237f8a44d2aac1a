"""Handlers for the site fault tests (loaded through EDA_HANDLER_MODULES by the worker they start).

The side effect is a ToDo whose description carries the message id, written in the message's site
transaction: one ToDo per id exactly when the EDA Message says Processed.
"""

import os
import time

import frappe

from frappe_eda.messaging import PermanentFailure, current_context, subscribe

QUEUE = os.environ.get("EDA_SITE_FAULT_QUEUE", "eda-site-fault.work")
EXCHANGE = os.environ.get("EDA_SITE_FAULT_EXCHANGE", "eda-site-fault.events")


@subscribe("fault.#", queue=QUEUE, exchange=EXCHANGE, max_attempts=3, retry_delays=(0.2, 0.5))
def record_todo(message):
	payload = message.payload
	if payload.get("permanent"):
		raise PermanentFailure(f"message {payload['n']} can never succeed")
	if current_context().attempt <= payload.get("fail_times", 0):
		raise RuntimeError(f"transient failure of message {payload['n']}")
	time.sleep(payload.get("sleep", 0))
	frappe.get_doc({"doctype": "ToDo", "description": f"eda-fault {message.id}"}).insert(
		ignore_permissions=True
	)
