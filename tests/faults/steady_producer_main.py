"""A producer process that publishes one message at a time through ``Publisher.publish()`` with a
SQL store, at a steady rate, as a web service does (one call per request). It writes the id of each
message to EDA_FAULT_IDS before publishing it, and at the end a JSON line on stdout: how many calls
raised (``refused``), the longest call (the stall a caller saw) and when it began (seconds from start).

Configured by environment: EDA_FAULT_AMQP (the node list), EDA_FAULT_STORE, EDA_FAULT_EXCHANGE,
EDA_FAULT_COUNT, EDA_FAULT_RATE (messages a second), EDA_FAULT_IDS, EDA_FAULT_CLIENT_NAME,
EDA_FAULT_WAIT (1: ``publish()``, 0: ``publish(wait=False)``), EDA_FAULT_TAG.
"""

from __future__ import annotations

import json
import os
import time

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.errors import PublishError
from frappe_eda.messaging.notify import LoggingNotifier
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.stores import open_store
from tests.faults.process_setup import broker_settings_from_env, log_to_stdout, paced_messages


def main() -> None:
	log_to_stdout()
	tag, count = os.environ.get("EDA_FAULT_TAG", "s0"), int(os.environ["EDA_FAULT_COUNT"])
	rate = float(os.environ.get("EDA_FAULT_RATE", "150"))
	wait = os.environ.get("EDA_FAULT_WAIT", "1") == "1"
	settings = broker_settings_from_env()
	store = open_store(os.environ["EDA_FAULT_STORE"])
	raised = 0
	longest, longest_at = 0.0, 0.0
	started = time.monotonic()
	with open(os.environ["EDA_FAULT_IDS"], "w") as ids, BrokerConnection(settings) as connection:
		publisher = Publisher(
			connection, store, exchange=os.environ["EDA_FAULT_EXCHANGE"], notifier=LoggingNotifier()
		)
		for n, message in enumerate(paced_messages(tag, count, rate, ids), 1):
			began = time.monotonic()
			try:
				publisher.publish(message, wait=wait)
			except PublishError as e:
				raised += 1
				print(
					f"{time.monotonic() - started:.3f}s: publish of {n} raised {type(e).__name__}: {e}",
					flush=True,
				)
			took = time.monotonic() - began
			if took > longest:
				longest, longest_at = took, began - started
		publisher.close()
	store.close()
	summary = {"sent": count, "refused": raised, "longest_stall": longest, "longest_stall_at": longest_at}
	print(json.dumps(summary), flush=True)


if __name__ == "__main__":
	main()
