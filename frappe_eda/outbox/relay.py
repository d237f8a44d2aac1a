"""The site's relay: drains Pending EDA Messages to the broker, woken right after each commit.

Runs as ``bench --site SITE eda relay`` (one per site), or inside ``bench eda worker``; the scheduler's
``relay_stale`` re-drives anything older than a minute in case neither runs. Messages go out in the
order they were written; a broker outage leaves them Pending and the next drain sends them.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from types import FrameType

import frappe

from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.errors import BrokerUnavailable
from frappe_eda.messaging.outbox import OutboxRelay
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.outbox.wakeup import wait_for_wake
from frappe_eda.setup.readiness import when_installed

log = logging.getLogger(__name__)


def site_publisher(connection: BrokerConnection) -> Publisher:
	from frappe_eda.desk.notifications import site_notifier
	from frappe_eda.settings import load_settings
	from frappe_eda.stores.doctype_store import DocTypeStore

	settings = load_settings()
	return Publisher(
		connection,
		DocTypeStore(commit=True),
		exchange=settings.exchange,
		source=frappe.local.site,
		notifier=site_notifier(settings),
	)


def drain(connection: BrokerConnection, older_than: datetime | None = None) -> int:
	"""Send everything Pending now (or only what was created by ``older_than``); returns how many the
	broker confirmed. Another relay holding the claim makes it return 0 at once."""
	with _site_relay(connection) as relay:
		return relay.drain(older_than=older_than)


def relay_some(connection: BrokerConnection, batches: int) -> bool:
	"""At most ``batches`` batches of what is Pending; whether more is left to send. The worker relays
	this way between the batches it consumes, so a large import or backfill in the outbox is sent a few
	hundred messages at a time while the worker keeps consuming."""
	with _site_relay(connection) as relay:
		relay.drain(max_batches=batches)
		return relay.more_pending


@contextmanager
def _site_relay(connection: BrokerConnection) -> Iterator[OutboxRelay]:
	frappe.db.commit()  # start a fresh snapshot: rows committed by other processes become visible
	publisher = site_publisher(connection)
	assert publisher.store is not None
	try:
		yield OutboxRelay(publisher, publisher.store)
	finally:
		publisher.close()


def run_relay(poll_seconds: float = 5.0, stop: threading.Event | None = None) -> None:
	"""Relay until SIGTERM/SIGINT: drain, wait for a commit signal (or the poll timeout), repeat."""
	from frappe_eda.settings import load_settings

	stop = stop or _stop_on_signals()
	settings = load_settings()
	with BrokerConnection(settings.broker) as connection:
		log.info("relaying %s to %s", frappe.local.site, settings.broker.redacted_url())
		while not stop.is_set():
			try:
				drain(connection)
			except BrokerUnavailable as e:
				log.warning("broker unavailable, messages stay Pending: %s", e)
				stop.wait(poll_seconds)
				continue
			except Exception:
				# The database is away, or something no one foresaw: the relay must outlive it (the rows
				# stay Pending), so log it, reconnect the site and try again after the poll interval.
				from frappe_eda.consumer import ensure_database

				log.exception("outbox relay failed; messages stay Pending")
				ensure_database()
				stop.wait(poll_seconds)
				continue
			connection.process_events(0)  # heartbeats while we wait on Redis
			wait_for_wake(min(poll_seconds, max(1.0, settings.broker.heartbeat / 2)))


@when_installed
def relay_stale() -> None:
	"""Scheduler job: send Pending messages older than a minute that no relay picked up."""
	from frappe_eda.settings import load_settings

	settings = load_settings()
	if not settings.enabled:
		return
	cutoff = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=1)  # EDA times are UTC
	if not frappe.db.exists(
		"EDA Message", {"direction": "Outgoing", "status": "Pending", "created_at": ["<", cutoff]}
	):
		return
	try:
		with BrokerConnection(settings.broker) as connection:
			drain(connection, older_than=cutoff)
	except BrokerUnavailable as e:
		log.warning("scheduled relay: broker unavailable, messages stay Pending: %s", e)


def _stop_on_signals() -> threading.Event:
	stop = threading.Event()

	def handle(signum: int, _frame: FrameType | None) -> None:
		stop.set()

	signal.signal(signal.SIGTERM, handle)
	signal.signal(signal.SIGINT, handle)
	return stop
