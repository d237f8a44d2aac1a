"""The worker process the fault scenarios attack. Configured by environment, killed and restarted.

Its handler writes one side-effect row per message through the store's transaction, so a row exists
exactly when the inbox says the message was processed; a second row for one id means an effect ran
twice. Fault switches: EDA_FAULT_KILL_IN_HANDLER=n (SIGKILL itself inside the handler of message n,
once) and EDA_FAULT_KILL_BEFORE_ACK=k (SIGKILL itself after the k-th batch committed, before its ack,
once). A marker file makes "once" survive the restart. Payload switches: ``fail_times``, ``permanent``,
``commit`` (the handler commits the store's transaction itself) and ``rollback_times`` (it rolls it back
on its first attempts).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import text

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.consumer import Worker, WorkerOptions
from frappe_eda.messaging.context import current_context
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import PermanentFailure
from frappe_eda.messaging.notify import LoggingNotifier
from frappe_eda.messaging.processing import Decision
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.stores import open_store
from tests.faults.process_setup import log_to_stdout

QUEUE = os.environ["EDA_FAULT_QUEUE"]
EXCHANGE = os.environ["EDA_FAULT_EXCHANGE"]
MARKERS = Path(os.environ["EDA_FAULT_MARKERS"])
KILL_IN_HANDLER = int(os.environ.get("EDA_FAULT_KILL_IN_HANDLER", "0"))
KILL_BEFORE_ACK = int(os.environ.get("EDA_FAULT_KILL_BEFORE_ACK", "0"))
HANDLER_SECONDS = float(os.environ.get("EDA_FAULT_HANDLER_SECONDS", "0"))
# The cluster scenarios: quorum queues, a name to find the worker's connection by, strict order.
QUEUE_TYPE = os.environ.get("EDA_FAULT_QUEUE_TYPE", "classic")
CLIENT_NAME = os.environ.get("EDA_FAULT_CLIENT_NAME", "frappe_eda")
SINGLE_ACTIVE = os.environ.get("EDA_FAULT_SINGLE_ACTIVE") == "1"

registry = HandlerRegistry()


def _once(name: str) -> bool:
	marker = MARKERS / name
	if marker.exists():
		return False
	marker.write_text(str(os.getpid()))
	return True


@registry.subscribe(
	"fault.#",
	queue=QUEUE,
	exchange=EXCHANGE,
	max_attempts=3,
	retry_delays=(0.2, 0.5),
	single_active_consumer=SINGLE_ACTIVE,
)
def apply_effect(message: Message) -> None:
	context = current_context()
	payload = message.payload
	if payload.get("permanent"):
		raise PermanentFailure(f"message {payload.get('n')} can never succeed")
	if context.attempt <= payload.get("fail_times", 0):
		raise RuntimeError(f"transient failure on attempt {context.attempt}")
	if HANDLER_SECONDS:
		time.sleep(HANDLER_SECONDS)
	if KILL_IN_HANDLER and payload.get("n") == KILL_IN_HANDLER and _once("kill-in-handler"):
		os.kill(os.getpid(), signal.SIGKILL)
	connection = context.store.connection  # type: ignore[attr-defined]
	connection.execute(text("INSERT INTO side_effect (message_id) VALUES (:id)"), {"id": message.id})
	# Handlers that end the worker's transaction themselves, as much Frappe code does.
	if payload.get("commit"):
		connection.commit()
	elif context.attempt <= payload.get("rollback_times", 0):
		connection.rollback()


class FaultyWorker(Worker):
	batches = 0

	def _ack(self, decisions: Sequence[Decision]) -> None:
		self.batches += 1
		if KILL_BEFORE_ACK and self.batches == KILL_BEFORE_ACK and _once("kill-before-ack"):
			os.kill(os.getpid(), signal.SIGKILL)
		super()._ack(decisions)


def main() -> None:
	log_to_stdout()
	store = open_store(os.environ["EDA_FAULT_STORE"])
	settings = BrokerSettings(
		url=os.environ["EDA_FAULT_AMQP"],
		heartbeat=5,
		reconnect_attempts=60,
		reconnect_max_wait=2,
		client_name=CLIENT_NAME,
	)
	with BrokerConnection(settings) as connection:
		worker = FaultyWorker(
			connection,
			registry,
			store,
			retry=RetryPolicy(3, (0.2, 0.5)),
			notifier=LoggingNotifier(),
			options=WorkerOptions(
				prefetch=int(os.environ.get("EDA_FAULT_PREFETCH", "50")),
				poll_seconds=0.2,
				default_queue_type=QUEUE_TYPE,
			),
		)
		worker.install_signal_handlers()
		stats = worker.run()
		print(f"worker stopped: {stats}", flush=True)
		worker.close()
	store.close()


if __name__ == "__main__":
	main()
