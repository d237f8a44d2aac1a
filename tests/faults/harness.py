"""Fault scenarios against the real broker and databases, and the reconciliation they must pass.

Every scenario sends N messages through a real producer to a real worker process, injects one fault
mid-stream, waits for the dust to settle and reconciles: each id sent ends exactly once as processed
(one side-effect row) or as dead (with an error record). ``lost`` and ``twice`` must be 0.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pika
from sqlalchemy import create_engine, text

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import BrokerUnavailable
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.store import Direction, MessageFilter, Status
from frappe_eda.stores import open_store

REPO = Path(__file__).resolve().parents[2]
MARIADB_SERVER = os.environ.get("EDA_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")


def rabbitmqctl(*args: str, timeout: float = 120) -> str:
	return subprocess.run(
		["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=timeout
	).stdout


@dataclass
class Outcome:
	scenario: str
	sent: int
	processed: int
	dead: int
	lost: int
	twice: int
	recovery_seconds: float | None = None
	notes: list[str] = field(default_factory=list)
	# Messages a producer's store left FAILED at the end (the broker refused them and nothing sends them
	# again); None where the scenario's producers keep no store.
	refused: int | None = None
	# The longest single publishing call a producer made (``publish()``, ``publish_many``, a relay's
	# drain): what a caller waited; None where not measured.
	longest_stall: float | None = None

	def check(self, expected_dead: int | None = None) -> Outcome:
		assert self.lost == 0, f"{self.scenario}: {self.lost} messages lost"
		assert self.twice == 0, f"{self.scenario}: {self.twice} side effects ran twice"
		assert not self.refused, f"{self.scenario}: {self.refused} messages left FAILED (refused)"
		if expected_dead is not None:
			assert self.dead == expected_dead, f"{self.scenario}: {self.dead} dead, expected {expected_dead}"
		return self


class FaultLab:
	"""A vhost, a broker user with a secret password, a store, and the worker processes under attack."""

	def __init__(self, workdir: Path, vhost: str, store_url: str | None = None) -> None:
		self.workdir = workdir
		self.vhost = vhost
		self.user = f"eda-fault-{uuid.uuid4().hex[:6]}"
		self.password = f"pw-{secrets.token_hex(12)}"
		rabbitmqctl("add_user", self.user, self.password)
		rabbitmqctl("set_permissions", "-p", vhost, self.user, ".*", ".*", ".*")
		self.amqp_url = f"amqp://{self.user}:{self.password}@127.0.0.1:5672/{quote(vhost, safe='')}"
		self.prefix = f"fault-{uuid.uuid4().hex[:6]}"
		self.queue, self.exchange = f"{self.prefix}.work", f"{self.prefix}.events"
		self.store_url = store_url or f"sqlite:///{workdir / 'fault.sqlite3'}"
		self.markers = workdir / "markers"
		self.markers.mkdir(exist_ok=True)
		self.logs: list[Path] = []
		self.engine = create_engine(self.store_url)
		open_store(self.store_url).close()  # creates the store's tables
		with self.engine.begin() as db:
			db.execute(text("CREATE TABLE side_effect (message_id VARCHAR(64) NOT NULL)"))
		self.worker: subprocess.Popen[bytes] | None = None

	def close(self) -> None:
		self.stop_worker()
		self.engine.dispose()
		try:
			rabbitmqctl("delete_user", self.user)
		except subprocess.CalledProcessError:
			pass

	# --- the worker ---------------------------------------------------------------------------------

	def start_worker(self, **fault_env: str) -> subprocess.Popen[bytes]:
		log = self.workdir / f"worker-{len(self.logs)}.log"
		self.logs.append(log)
		env = {
			**os.environ,
			"PYTHONPATH": str(REPO),
			"EDA_FAULT_AMQP": self.amqp_url,
			"EDA_FAULT_STORE": self.store_url,
			"EDA_FAULT_QUEUE": self.queue,
			"EDA_FAULT_EXCHANGE": self.exchange,
			"EDA_FAULT_MARKERS": str(self.markers),
			**fault_env,
		}
		with log.open("wb") as out:
			self.worker = subprocess.Popen(
				[sys.executable, "-m", "tests.faults.worker_main"],
				env=env,
				stdout=out,
				stderr=subprocess.STDOUT,
				cwd=REPO,
			)
		self.wait_for(lambda: self._queue_exists(), 30, "the worker to consume its queue")
		return self.worker

	def stop_worker(self, sig: int = signal.SIGTERM) -> int | None:
		worker, self.worker = self.worker, None
		if worker is None or worker.poll() is not None:
			return worker.returncode if worker else None
		worker.send_signal(sig)
		try:
			return worker.wait(timeout=60)
		except subprocess.TimeoutExpired:
			worker.kill()
			return worker.wait()

	def wait_for_worker_death(self, timeout: float = 60) -> int:
		assert self.worker is not None
		return self.worker.wait(timeout=timeout)

	def _queue_exists(self) -> bool:
		connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
		try:
			# Consumers start after the bindings exist; the queue alone may not be bound yet.
			return connection.channel().queue_declare(self.queue, passive=True).method.consumer_count > 0
		except pika.exceptions.ChannelClosedByBroker:
			return False
		finally:
			if connection.is_open:
				connection.close()

	# --- producing ----------------------------------------------------------------------------------

	def messages(self, count: int, payload: Callable[[int], dict] | None = None) -> list[Message]:
		return [Message("fault.item", payload(n) if payload else {"n": n}) for n in range(1, count + 1)]

	def publish(
		self, messages: list[Message], chunk: int = 50, between: Callable[[int], None] | None = None
	) -> None:
		"""Publish with confirms, resending a chunk after an outage (same ids: consumers dedupe)."""
		settings = BrokerSettings(url=self.amqp_url, reconnect_attempts=60, reconnect_max_wait=2, heartbeat=5)
		with BrokerConnection(settings) as connection:
			publisher = Publisher(connection, exchange=self.exchange, resend_attempts=5)
			for index, start in enumerate(range(0, len(messages), chunk)):
				if between:
					between(index)
				part = messages[start : start + chunk]
				for _ in range(60):
					try:
						report = publisher.publish_many(part)
						report.raise_first()
						break
					except BrokerUnavailable:
						time.sleep(1)
						_reopen(connection)
				else:
					raise AssertionError("the producer never got its messages confirmed")

	def publish_raw(
		self,
		body: bytes,
		properties: pika.BasicProperties,
		routing_key: str = "fault.item",
		exchange: str | None = None,
	) -> None:
		connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
		channel = connection.channel()
		channel.basic_publish(self.exchange if exchange is None else exchange, routing_key, body, properties)
		connection.close()

	# --- observing ----------------------------------------------------------------------------------

	def effects(self) -> Counter[str]:
		with self.engine.connect() as db:
			return Counter(row[0] for row in db.execute(text("SELECT message_id FROM side_effect")))

	def finished_ids(self) -> tuple[set[str], set[str]]:
		store = open_store(self.store_url)
		try:
			query = MessageFilter(direction=Direction.INCOMING, queue=self.queue, limit=10**7)
			records = store.find(query)
			processed = {r.message_id for r in records if r.status is Status.PROCESSED}
			dead = {r.message_id for r in records if r.status is Status.DEAD}
			without_errors = [m for m in dead if not store.errors(m, self.queue)]
			assert not without_errors, f"dead messages without an error record: {without_errors[:5]}"
			return processed, dead
		finally:
			store.close()

	def settle(self, ids: set[str], timeout: float = 240) -> None:
		def done() -> bool:
			processed, dead = self.finished_ids()
			return ids <= processed | dead

		self.wait_for(done, timeout, f"{len(ids)} messages to be processed or dead")

	def reconcile(
		self,
		scenario: str,
		ids: set[str],
		recovery: float | None = None,
		committed_dead: frozenset[str] = frozenset(),
	) -> Outcome:
		"""``committed_dead``: messages whose handler committed its effect itself, so they are dead with
		their effect (once) instead of processed."""
		processed, dead = self.finished_ids()
		effects = self.effects()
		assert committed_dead <= dead, "a handler that committed must leave its message dead"
		assert set(effects) == processed | committed_dead, (
			"side effects and processed records (plus handlers that committed) must be the same set"
		)
		return Outcome(
			scenario=scenario,
			sent=len(ids),
			processed=len(ids & processed),
			dead=len(ids & dead),
			lost=len(ids - processed - dead),
			twice=sum(1 for count in effects.values() if count > 1),
			recovery_seconds=recovery,
		)

	def first_effect_after(self, moment: float, before: int, timeout: float = 120) -> float:
		"""Seconds from ``moment`` until the side-effect count rises above ``before``."""
		self.wait_for(lambda: sum(self.effects().values()) > before, timeout, "processing to resume")
		return time.monotonic() - moment

	@staticmethod
	def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
		deadline = time.monotonic() + timeout
		while time.monotonic() < deadline:
			try:
				if condition():
					return
			except Exception:
				pass  # the broker or database may be the thing that is down right now
			time.sleep(0.1)
		raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")

	def secrets_found(self) -> list[str]:
		"""Where the broker password shows up: worker logs and every column of the store."""
		places = [str(log) for log in self.logs if self.password in log.read_text(errors="replace")]
		with self.engine.connect() as db:
			for table in ("eda_message", "eda_error"):
				for row in db.execute(text(f"SELECT * FROM {table}")):
					if any(self.password in str(value) for value in row):
						places.append(f"{table} row {row[0]}")
		return places


def _reopen(connection: BrokerConnection) -> None:
	try:
		connection.reconnect()
	except Exception:
		pass


@contextmanager
def mariadb_store(workdir: Path) -> Iterator[tuple[str, str]]:
	"""A database and a user of its own, so a scenario can lock the worker out and let it back in."""
	name = f"eda_fault_{uuid.uuid4().hex[:8]}"
	user, password = name, secrets.token_hex(8)
	admin = create_engine(f"{MARIADB_SERVER}/", isolation_level="AUTOCOMMIT")
	with admin.connect() as db:
		db.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
		db.execute(text(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'"))
		db.execute(text(f"GRANT ALL ON {name}.* TO '{user}'@'127.0.0.1'"))
	try:
		yield f"mysql+pymysql://{user}:{password}@127.0.0.1:3306/{name}?charset=utf8mb4", user
	finally:
		with admin.connect() as db:
			db.execute(text(f"DROP DATABASE IF EXISTS {name}"))
			db.execute(text(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'"))
		admin.dispose()


def lock_out(user: str, seconds: float) -> None:
	"""The database refuses the worker: its account is locked and its connections are killed."""
	admin = create_engine(f"{MARIADB_SERVER}/", isolation_level="AUTOCOMMIT")
	with admin.connect() as db:
		db.execute(text(f"ALTER USER '{user}'@'127.0.0.1' ACCOUNT LOCK"))
		for (connection_id,) in db.execute(
			text(f"SELECT id FROM information_schema.processlist WHERE user = '{user}'")
		):
			db.execute(text(f"KILL {int(connection_id)}"))
		time.sleep(seconds)
		db.execute(text(f"ALTER USER '{user}'@'127.0.0.1' ACCOUNT UNLOCK"))
	admin.dispose()


def in_background(action: Callable[[], None]) -> threading.Thread:
	thread = threading.Thread(target=action, daemon=True)
	thread.start()
	return thread
