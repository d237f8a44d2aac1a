"""An outbox process of the cluster scenarios: the Frappe outbox's pattern with the SQL store.

Each message is first written PENDING in the store, in a commit of its own (as a document's hook writes
it in the request's transaction), and the relay (``OutboxRelay``, the core the Frappe relay wraps)
drains right after each commit, as the Frappe relay is woken after each one. EDA_FAULT_RATE messages a
second. At the end it drains until nothing is PENDING and no message the broker refused for now
(``StillNacked``) waits to be sent again, for EDA_FAULT_SETTLE seconds at most.

Configured by environment: EDA_FAULT_AMQP (the node list), EDA_FAULT_STORE, EDA_FAULT_EXCHANGE,
EDA_FAULT_COUNT, EDA_FAULT_RATE, EDA_FAULT_IDS, EDA_FAULT_CLIENT_NAME, EDA_FAULT_TAG,
EDA_FAULT_RETRY_REFUSED_AFTER (``OutboxRelay(retry_refused_after=...)``). Its last line on stdout is
JSON: the longest drain (the stall the relay saw) and how many messages it put back in line.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.notify import LoggingNotifier
from frappe_eda.messaging.outbox import STILL_NACKED, OutboxRelay
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.store import Direction, MessageFilter, Status
from frappe_eda.stores import open_store
from tests.faults.process_setup import broker_settings_from_env, log_to_stdout, paced_messages
from tests.outbox_rows import pending_row

PENDING = MessageFilter(direction=Direction.OUTGOING, statuses=(Status.PENDING,), limit=1)


def main() -> None:
	log_to_stdout()
	tag, count = os.environ.get("EDA_FAULT_TAG", "o0"), int(os.environ["EDA_FAULT_COUNT"])
	rate = float(os.environ.get("EDA_FAULT_RATE", "150"))
	exchange = os.environ["EDA_FAULT_EXCHANGE"]
	settle = float(os.environ.get("EDA_FAULT_SETTLE", "180"))
	settings = broker_settings_from_env()
	store = open_store(os.environ["EDA_FAULT_STORE"])
	longest = 0.0
	with open(os.environ["EDA_FAULT_IDS"], "w") as ids, BrokerConnection(settings) as connection:
		publisher = Publisher(connection, store, exchange=exchange, notifier=LoggingNotifier())
		relay = OutboxRelay(
			publisher, store, retry_refused_after=float(os.environ.get("EDA_FAULT_RETRY_REFUSED_AFTER", "60"))
		)
		for message in paced_messages(tag, count, rate, ids):
			store.save([pending_row(message, exchange)])
			began = time.monotonic()
			relay.drain()
			longest = max(longest, time.monotonic() - began)
		deadline = time.monotonic() + settle
		while time.monotonic() < deadline:
			relay.drain()
			# Every StillNacked record, rested or not: the relay has not sent it yet.
			tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
			waiting = store.failed_with(STILL_NACKED, updated_before=tomorrow, limit=1)
			if not store.find(PENDING) and not waiting:
				break
			time.sleep(0.5)
		publisher.close()
	store.close()
	print(json.dumps({"longest_stall": longest, "requeued": relay.requeued}), flush=True)


if __name__ == "__main__":
	main()
