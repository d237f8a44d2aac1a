"""The bench worker: ``bench --site SITE eda worker`` consumes the handlers that installed apps list.

Apps list handler modules in their hooks.py (``eda_handlers = ["myapp.eda.handlers"]``); the modules
use ``frappe_eda.messaging.subscribe``. Each message runs in the site context, as the configured
worker user, in a savepoint of its own inside a site transaction shared by up to *Messages Per
Transaction* messages (EDA Settings, 50 by default): the handlers' writes and the EDA Message records
commit together, then the deliveries are acked. On failure everything that message's handler wrote
rolls back (its savepoint), the error is recorded as an EDA Error, and the message is retried or
dead-lettered; the others of the batch commit.

The loop thread (the bench command's) owns the broker connection and also relays the outbox between
batches; handlers run on one handler thread that has its own site connection.

Each batch starts from a fresh ``frappe.local``, as a web request or a background job does (Frappe
builds one per job in ``frappe.utils.background_jobs.execute_job``): an empty request-local cache, so
EDA Settings (the Worker User), the event rules and every cached document are read as the desk last
saved them; each message starts with no ``frappe.flags`` of the last handler, an empty
``message_log``, and the Worker User (``per_message``). The site's database connection
is kept: connecting per message would cost more than most messages.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import frappe

from frappe_eda import compat
from frappe_eda.messaging.connection import BrokerConnection
from frappe_eda.messaging.consumer import Worker, WorkerOptions, WorkerStats
from frappe_eda.messaging.heartbeat import COUNTERS, DEFAULT_HEARTBEAT_EVERY, show_worker_log
from frappe_eda.messaging.registry import HandlerRegistry, default_registry, import_handler_modules

log = logging.getLogger(__name__)

# Outbox batches (of 500) the worker relays between two batches it consumes.
RELAY_BATCHES_PER_TURN = 2


def handler_modules() -> list[str]:
	"""Modules listed by installed apps (``eda_handlers`` hook), plus ``EDA_HANDLER_MODULES``
	(comma-separated) from the environment, as the standalone ``frappe-eda worker`` reads it."""
	extra = [m.strip() for m in os.environ.get("EDA_HANDLER_MODULES", "").split(",") if m.strip()]
	return [*(frappe.get_hooks("eda_handlers") or []), *extra]


def eda_command(*args: str) -> list[str]:
	"""``bench --site SITE eda ARGS`` for this site, as a child process runs it (``bench_helper``, which
	also works as root, where ``bench`` refuses)."""
	return [
		sys.executable,
		"-m",
		"frappe.utils.bench_helper",
		"frappe",
		"--site",
		frappe.local.site,
		"eda",
		*args,
	]


def spawn_worker(env: dict[str, str], output: Any = subprocess.DEVNULL) -> subprocess.Popen:
	"""``bench --site SITE eda worker`` for this site as a child process (tests and benchmarks),
	with ``env`` added to the environment (e.g. ``EDA_HANDLER_MODULES``)."""
	return subprocess.Popen(
		eda_command("worker"),
		cwd=frappe.local.sites_path,
		env={**os.environ, **env},
		stdout=output,
		stderr=subprocess.STDOUT,
	)


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
	"""Send ``sig`` to a child process started by a test or benchmark (a worker, a profiler) and wait for
	it; kill it if it has not exited within ``timeout`` seconds, so that a tear-down never hangs on it."""
	if process.poll() is not None:
		return
	process.send_signal(sig)
	try:
		process.wait(timeout=timeout)
	except subprocess.TimeoutExpired:
		process.kill()
		process.wait()


def ensure_database() -> None:
	"""Reconnect the handler thread's site connection if the database dropped it (restart, kill)."""
	try:
		frappe.db.sql("select 1")
	except Exception:
		log.warning("site database connection lost; reconnecting")
		try:
			frappe.db.close()
		except Exception:
			pass
		frappe.connect()


def fresh_site_state(site: str, sites_path: str, user: str | None = None) -> None:
	"""Give this thread the ``frappe.local`` a new request would have (``frappe.init`` after a release,
	as ``execute_job`` does), keeping only its database connection and so the store's transaction state
	on it, which is empty between messages, and run as ``user`` (if given). ``frappe.set_user`` empties the
	request-local cache, as it always did, so cached documents (EDA Settings) and the event rules come
	from Redis, which Frappe and ``clear_rules_cache`` invalidate when they are saved. About 0.3 ms a
	message, measured."""
	db = getattr(frappe.local, "db", None)
	compat.release_local()
	frappe.init(site=site, sites_path=sites_path)
	frappe.local.db = db
	if user is not None:
		frappe.set_user(user)


def site_registry() -> HandlerRegistry:
	"""The handlers this site's worker runs: the apps' ``@subscribe`` handlers (``eda_handlers``), one per
	enabled EDA Subscription, the receipts queue when a destination asks for receipts, and the
	reconciliation queues (``replication.reconcile``)."""
	from frappe_eda.replication import receipts, subscriptions

	import_handler_modules(handler_modules())
	registry = HandlerRegistry()
	for subscription in default_registry:
		registry.add(subscription)
	subscriptions.add_to_registry(registry, subscriptions.enabled_specs())
	if receipts.receipts_wanted():
		registry.add(receipts.receipt_subscription())
	from frappe_eda.replication import reconcile

	reconcile.add_to_registry(registry)  # reconciliation queues, as a source and as a subscriber
	return registry


def per_message(registry: HandlerRegistry, worker_user: Callable[[], str]) -> HandlerRegistry:
	"""The same handlers, each call starting from the state a new message should see.

	Messages of a batch share one site transaction (each in its own savepoint), so ``frappe.local`` is
	renewed per batch only (``fresh_site_state``; the store's transaction state lives there); per message
	the flags, the message log, the user and the list of documents written are reset, and what the
	handler wrote is kept under its message id for the record's reference (``consumer.written``)."""
	from frappe_eda.consumer.written import first_written

	wrapped = HandlerRegistry()
	for subscription in registry:
		handler = subscription.handler

		def run(message: Any, handler: Callable[[Any], Any] = handler) -> Any:
			local = frappe.local
			initial = getattr(local, "eda_initial_flags", None) or {"currently_saving": []}
			local.flags = frappe._dict(
				{k: list(v) if isinstance(v, list) else v for k, v in initial.items()}, in_eda_worker=True
			)
			local.message_log = []
			local.eda_written = []
			user = worker_user()
			if frappe.session.user != user:  # a handler changed it; set_user also empties the request
				frappe.set_user(user)  # cache (metas, documents), which costs the next message ~1 ms
			result = handler(message)
			written = first_written()
			if written is not None:
				by_id = getattr(local, "eda_written_by_id", None)
				if by_id is None:
					by_id = local.eda_written_by_id = {}
				by_id[message.id] = written
			return result

		wrapped.add(dataclasses.replace(subscription, handler=run))
	return wrapped


def build_worker(
	connection: BrokerConnection,
	queues: Iterable[str] | None = None,
	heartbeat_every: float = DEFAULT_HEARTBEAT_EVERY,
	registry: HandlerRegistry | None = None,
) -> Worker:
	from frappe_eda.consumer.heartbeats import SiteHeartbeats
	from frappe_eda.desk.notifications import site_notifier
	from frappe_eda.replication.receipts import ReceiptingStore
	from frappe_eda.settings import load_settings, load_worker_user

	settings = load_settings()
	registry = site_registry() if registry is None else registry
	site, sites_path = frappe.local.site, frappe.local.sites_path

	def connect_handler_thread() -> None:
		frappe.init(site=site, sites_path=sites_path)
		frappe.connect()

	user: list[str] = []

	def before_each_batch() -> None:
		fresh_site_state(site, sites_path)
		ensure_database()
		user[:] = [load_worker_user()]  # read once per batch: EDA Settings as the desk last saved them
		frappe.set_user(user[0])
		frappe.local.flags.in_eda_worker = True
		frappe.local.eda_initial_flags = dict(frappe.local.flags)  # what per_message gives each message

	return Worker(
		connection,
		per_message(registry, lambda: user[0] if user else load_worker_user()),
		ReceiptingStore(commit=True),
		queues=queues,
		retry=settings.retry,
		notifier=site_notifier(settings),
		options=WorkerOptions(
			prefetch=max(settings.prefetch, settings.batch_size),
			max_batch=settings.batch_size,
			default_queue_type=settings.queue_type,
		),
		handler_thread_initializer=connect_handler_thread,
		before_batch=before_each_batch,
		# EDA Worker rows, written on the loop thread on a connection of their own (consumer.heartbeats)
		on_heartbeat=SiteHeartbeats(),
		heartbeat_every=heartbeat_every,
	)


def run_worker(queues: Iterable[str] | None = None, relay: bool = True) -> WorkerStats:
	"""Consume until SIGTERM/SIGINT; with ``relay`` also send the outbox between batches.

	When an EDA Subscription is added, changed or removed (``subscriptions.ChangeWatch``), the worker
	finishes the batch in hand and starts consuming the new set of queues on the same connection: no
	restart. Until there is anything to consume it waits for a subscription, rather than exiting."""
	from frappe_eda.replication.subscriptions import ChangeWatch
	from frappe_eda.settings import load_settings

	settings = load_settings()
	show_worker_log()  # bench sets up no logging: the throughput line would not show
	stopped = threading.Event()
	total = WorkerStats()
	with BrokerConnection(settings.broker) as connection:
		stop = threading.Event()
		relay_turn = None
		if relay:
			woken = threading.Event()
			_listen_for_commits(connection, woken, stop)
			relay_turn = _relay_when_woken(connection, woken, frappe.local.site, frappe.local.sites_path)
		try:
			while not stopped.is_set():
				watch = ChangeWatch()
				worker = build_worker(connection, queues)
				worker.install_signal_handlers(on_signal=stopped.set)  # and the reload loop with it
				if not worker.subscriptions and queues is None:
					_wait_for_subscriptions(connection, watch, stopped, relay_turn)
					worker.close()
					continue
				# Queues and bindings exist once the banner says "consuming": a message published from
				# then on is routed to them, even before the first poll.
				worker.declare()
				_announce(worker, settings.broker.redacted_url(), settings.prefetch, relay)
				worker.between_batches = relay_turn
				try:
					stats = worker.run(until=lambda _stats, w=watch: w.changed())
				finally:
					worker.close()
				_retire_deleted(connection, worker)
				_add_stats(total, stats)
				if not stopped.is_set():
					click_echo("EDA Subscriptions changed: consuming the new set of queues")
			return total
		finally:
			stop.set()


def _retire_deleted(connection: BrokerConnection, worker: Worker) -> None:
	"""Queues of subscriptions deleted meanwhile, which this worker consumed until now: deleted when
	empty (``replication.queues``); what is kept is said. Never stops the worker."""
	from frappe_eda.replication import SUBSCRIPTION_HANDLER_PREFIX
	from frappe_eda.replication.queues import retire_deleted

	consumed = [s.queue for s in worker.subscriptions if s.name.startswith(SUBSCRIPTION_HANDLER_PREFIX)]
	if not consumed:
		return
	try:
		frappe.db.rollback()  # a fresh read of the subscriptions
		for retired in retire_deleted(connection, consumed):
			click_echo(retired.summary())
	except Exception:
		log.warning("could not retire the queues of deleted subscriptions", exc_info=True)


def _wait_for_subscriptions(
	connection: BrokerConnection,
	watch: Any,
	stopped: threading.Event,
	relay_turn: Callable[[], None] | None,
) -> None:
	"""No handler and no subscription yet: keep the connection (and the relay) alive until one comes."""
	click_echo(
		f"eda worker for site {frappe.local.site}: no handlers and no enabled EDA Subscriptions yet; "
		"waiting for one"
	)
	while not stopped.is_set() and not watch.changed():
		connection.process_events(1.0)
		if relay_turn is not None:
			relay_turn()


def _add_stats(total: WorkerStats, stats: WorkerStats) -> None:
	for name in COUNTERS:
		setattr(total, name, getattr(total, name) + getattr(stats, name))


def click_echo(text: str) -> None:
	import click

	click.echo(text)


def _announce(worker: Worker, broker: str, prefetch: int, relay: bool) -> None:
	"""One start-up report on stdout (the password masked), so whoever started the worker sees at once
	whether it consumes and what: reconnects do not repeat it."""
	import click

	from frappe_eda.desk.notifications import recipients_summary

	told = recipients_summary()
	click.echo(f"eda worker for site {frappe.local.site}")
	click.echo(f"  broker {broker}, prefetch {prefetch}")
	click.echo(f"  relaying the outbox: {'yes' if relay else 'no (--no-relay)'}")
	click.echo(f"  {'WARNING: ' if told['warn'] else ''}{told['message']}")
	from frappe_eda.replication.trust import trust_summary

	trust = trust_summary()
	click.echo(f"  {'WARNING: ' if trust['warn'] else ''}{trust['message']}")
	click.echo(f"  consuming {len(worker.subscriptions)} queue(s):")
	for subscription in worker.subscriptions:
		if subscription.exchange_type in ("fanout", "headers"):
			binding = f"every message of {subscription.exchange_type} exchange {subscription.exchange}"
		else:
			binding = f"exchange {subscription.exchange} ({subscription.exchange_type}) with {', '.join(subscription.patterns)}"
		click.echo(f"    {subscription.queue} <- {binding} -> {subscription.name}")


def _listen_for_commits(connection: BrokerConnection, woken: threading.Event, stop: threading.Event) -> None:
	"""A thread that blocks on the after-commit signal and wakes the loop thread at once.

	The loop thread sleeps in pika's poll while no delivery arrives; without this, a commit would
	wait for the poll to time out. The thread touches no broker state: ``add_callback_threadsafe``
	is the one pika call that is safe from another thread.
	"""
	from frappe_eda.outbox.wakeup import WAKE_KEY

	cache = frappe.cache
	key = cache.make_key(WAKE_KEY)
	raw = connection.blocking

	def listen() -> None:
		while not stop.is_set():
			try:
				if cache.blpop([key], timeout=1):
					woken.set()
					raw.add_callback_threadsafe(lambda: None)
			except Exception:
				time.sleep(1)  # Redis away, or the connection closing: the poll fallback still relays

	threading.Thread(target=listen, name="eda-commit-listener", daemon=True).start()


def _relay_when_woken(
	connection: BrokerConnection,
	woken: threading.Event,
	site: str,
	sites_path: str,
	poll_seconds: float = 5.0,
) -> Callable[[], None]:
	"""Drain the outbox when a commit signalled it, and every ``poll_seconds`` regardless; each drain
	starts from a fresh ``frappe.local`` too, so it reads EDA Settings as they are now."""
	from frappe_eda.outbox.relay import relay_some

	last = 0.0

	def relay() -> None:
		nonlocal last
		if woken.is_set() or time.monotonic() - last >= poll_seconds:
			woken.clear()
			last = time.monotonic()
			try:
				fresh_site_state(site, sites_path, "Administrator")  # system work, as frappe.connect() does
				# A few batches per turn: a big import or backfill goes out while the worker consumes.
				if relay_some(connection, RELAY_BATCHES_PER_TURN):
					woken.set()
			except Exception:
				# The broker or the database is away: the messages stay Pending for the next turn.
				log.warning("outbox relay failed; messages stay Pending", exc_info=True)
				ensure_database()

	return relay
