"""What every process a fault scenario starts (producers, relays, workers) sets up the same way: its
log on stdout (the scenario keeps it beside its outcome) and its broker settings from the environment."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import TextIO

from frappe_eda.messaging.connection import BrokerSettings
from frappe_eda.messaging.envelope import Message


def log_to_stdout() -> None:
	logging.basicConfig(
		level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
	)
	logging.getLogger("pika").setLevel(logging.ERROR)


def broker_settings_from_env() -> BrokerSettings:
	"""The node list the scenario gives a producing process (``EDA_FAULT_AMQP``), with reconnects patient
	enough to outlast a node's restart; shared by every producing process of the fault scenarios."""
	return BrokerSettings(
		url=os.environ["EDA_FAULT_AMQP"],
		reconnect_attempts=60,
		reconnect_max_wait=2,
		heartbeat=5,
		client_name=os.environ.get("EDA_FAULT_CLIENT_NAME", "frappe_eda"),
	)


def paced_messages(tag: str, count: int, rate: float, ids: TextIO) -> Iterator[Message]:
	"""``count`` messages at ``rate`` a second, as a service sends them one at a time; each id is written
	to ``ids`` (and flushed) before the message is handed out, so the scenario knows what was meant to be
	sent even if this process dies."""
	started = time.monotonic()
	for n in range(1, count + 1):
		due = started + n / rate
		if due > time.monotonic():
			time.sleep(due - time.monotonic())
		message = Message("fault.item", {"producer": tag, "n": n})
		ids.write(message.id + "\n")
		ids.flush()
		yield message
