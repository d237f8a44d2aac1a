"""A producer process of the cluster scenarios: writes the ids it will send, then publishes them with
confirms in chunks (``publish_many``), resending a chunk after an outage (same ids: the consumers'
inboxes drop copies). With EDA_FAULT_STORE each message is recorded in that store, and one the broker
refused is left FAILED there (the scenario counts those as refused); the producer goes on.

One process per producer because a process holds one broker connection (``ConnectionAlreadyOpen``).
Configured by environment: EDA_FAULT_AMQP (the node list), EDA_FAULT_EXCHANGE, EDA_FAULT_COUNT,
EDA_FAULT_TAG (in each payload), EDA_FAULT_IDS (the file of ids), EDA_FAULT_CLIENT_NAME, EDA_FAULT_STORE.
Its last line on stdout is JSON: how many were refused and the longest ``publish_many`` call.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import BrokerUnavailable
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.stores import open_store
from tests.faults.process_setup import broker_settings_from_env, log_to_stdout

CHUNK = int(os.environ.get("EDA_FAULT_CHUNK", "20"))
# A short pause between chunks keeps the producers publishing while the fault strikes.
PAUSE = float(os.environ.get("EDA_FAULT_PAUSE", "0.02"))


def main() -> None:
	log_to_stdout()
	tag, count = os.environ["EDA_FAULT_TAG"], int(os.environ["EDA_FAULT_COUNT"])
	messages = [Message("fault.item", {"producer": tag, "n": n}) for n in range(1, count + 1)]
	Path(os.environ["EDA_FAULT_IDS"]).write_text("\n".join(m.id for m in messages) + "\n")
	settings = broker_settings_from_env()
	store = open_store(os.environ["EDA_FAULT_STORE"]) if os.environ.get("EDA_FAULT_STORE") else None
	resent = refused = 0
	longest = 0.0
	with BrokerConnection(settings) as connection:
		publisher = Publisher(connection, store, exchange=os.environ["EDA_FAULT_EXCHANGE"], resend_attempts=5)
		for start in range(0, count, CHUNK):
			time.sleep(PAUSE)
			part = messages[start : start + CHUNK]
			for _ in range(60):
				began = time.monotonic()
				try:
					report = publisher.publish_many(part)
					longest = max(longest, time.monotonic() - began)
					for message_id, error in report.failed.items():
						refused += 1
						print(f"message {message_id} refused: {type(error).__name__}: {error}", flush=True)
					if store is None:
						report.raise_first()
					break
				except BrokerUnavailable as e:
					resent += 1
					print(f"chunk at {start} not confirmed ({e}); resending it", flush=True)
					time.sleep(0.5)
					try:
						connection.reconnect()
					except BrokerUnavailable:
						pass
			else:
				raise SystemExit(f"chunk at {start} never confirmed")
		publisher.close()
	if store is not None:
		store.close()
	print(f"producer {tag} done: {count - refused} confirmed, {resent} chunks resent", flush=True)
	print(json.dumps({"refused": refused, "longest_stall": longest}), flush=True)


if __name__ == "__main__":
	main()
