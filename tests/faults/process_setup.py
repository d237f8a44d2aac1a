"""What every process a fault scenario starts (producers, relays, workers) sets up the same way: its
log on stdout (the scenario keeps it beside its outcome) and its broker settings from the environment."""

from __future__ import annotations

import logging
import os
import sys

from frappe_eda.messaging.connection import BrokerSettings


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
