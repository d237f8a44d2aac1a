"""``frappe-eda``: run the SDK from a shell, outside Frappe (inside a bench use ``bench eda``).

Every option also reads an environment variable (``EDA_AMQP_URL``, ``EDA_STORE_URL``, ...), so a
supervisor or container definition can configure it without putting the broker password on the
command line, where ``ps`` would show it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import click

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.consumer import Worker, WorkerOptions
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import EdaError
from frappe_eda.messaging.heartbeat import DEFAULT_REPORT_EVERY, WorkerBeat
from frappe_eda.messaging.notify import build_notifier
from frappe_eda.messaging.outbox import OutboxRelay
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import default_registry, import_handler_modules
from frappe_eda.messaging.replay import Replayer
from frappe_eda.messaging.retry import DEFAULT_DELAYS, RetryPolicy
from frappe_eda.messaging.store import Direction, MessageFilter, MessageStore, Status
from frappe_eda.messaging.topology import TopologyDeclarer, dead_letter_queue
from frappe_eda.messaging.trust import SigningKey
from frappe_eda.messaging.trust.broker_users import (
	ManagementApi,
	ProvisionReport,
	provision,
	rabbitmqctl_commands,
)
from frappe_eda.messaging.trust.permissions import Route, ServerTraffic
from frappe_eda.stores import DEFAULT_STORE_URL, open_store, worker_table


class Context:
	def __init__(self, url: str, store_url: str, exchange: str, source: str) -> None:
		self.settings = BrokerSettings(url=url)
		self.store_url = store_url
		self.exchange = exchange
		self.source = source

	@contextmanager
	def session(self) -> Iterator[tuple[BrokerConnection, MessageStore]]:
		store = open_store(self.store_url)
		connection = BrokerConnection(self.settings)
		try:
			connection.open()
			yield connection, store
		finally:
			if connection.is_open:
				connection.close()
			store.close()


pass_context = click.make_pass_decorator(Context)
# click's own formats, and the same with a UTC offset (+02:00, Z): a time without one is UTC.
TIME_FORMATS = (
	"%Y-%m-%d",
	"%Y-%m-%dT%H:%M:%S",
	"%Y-%m-%d %H:%M:%S",
	"%Y-%m-%dT%H:%M:%S%z",
	"%Y-%m-%d %H:%M:%S%z",
)


@click.group()
@click.option(
	"--url",
	envvar="EDA_AMQP_URL",
	default="amqp://guest:guest@127.0.0.1:5672/%2F",
	show_envvar=True,
	help="Broker URL (amqp:// or amqps://); for a cluster, every node's URL (or host:port after the "
	"first URL) separated by commas.",
)
@click.option(
	"--store",
	"store_url",
	envvar="EDA_STORE_URL",
	default=DEFAULT_STORE_URL,
	show_default=True,
	show_envvar=True,
	help="SQLAlchemy URL of the message store, or memory://.",
)
@click.option("--exchange", envvar="EDA_EXCHANGE", default="eda.events", show_default=True, show_envvar=True)
@click.option(
	"--source",
	envvar="EDA_SOURCE",
	default="frappe-eda-cli",
	help="Name of this service in message envelopes.",
)
@click.option("-v", "--verbose", is_flag=True)
@click.pass_context
def main(ctx: click.Context, url: str, store_url: str, exchange: str, source: str, verbose: bool) -> None:
	"""Event-driven messaging over RabbitMQ: publish, consume, inspect and replay."""
	logging.basicConfig(
		level=logging.DEBUG if verbose else logging.INFO,
		format="%(asctime)s %(levelname)s %(name)s: %(message)s",
	)
	logging.getLogger("pika").setLevel(logging.WARNING)
	ctx.obj = Context(url, store_url, exchange, source)


@main.command()
@click.option(
	"-m",
	"--module",
	"modules",
	multiple=True,
	required=True,
	envvar="EDA_HANDLER_MODULES",
	help="Module with @subscribe handlers (repeatable).",
)
@click.option(
	"-q", "--queue", "queues", multiple=True, help="Only these queues (default: every registered handler's)."
)
@click.option("--prefetch", default=WorkerOptions.prefetch, show_default=True)
@click.option(
	"--max-attempts", default=5, show_default=True, help="Default for handlers that do not set their own."
)
@click.option(
	"--retry-delays",
	default=",".join(f"{d:g}" for d in DEFAULT_DELAYS),
	show_default=True,
	help="Seconds, comma separated.",
)
@click.option("--queue-type", type=click.Choice(["classic", "quorum"]), default="classic", show_default=True)
@click.option(
	"--sentry-dsn", envvar="EDA_SENTRY_DSN", default=None, help="Send dead-letter alerts to Sentry."
)
@click.option(
	"--report-every",
	default=DEFAULT_REPORT_EVERY,
	show_default=True,
	help="Seconds between throughput lines while busy (none while idle); 0: never.",
)
@pass_context
def worker(
	ctx: Context,
	modules: tuple[str, ...],
	queues: tuple[str, ...],
	prefetch: int,
	max_attempts: int,
	retry_delays: str,
	queue_type: str,
	sentry_dsn: str | None,
	report_every: float,
) -> None:
	"""Consume the queues of the handlers in MODULES until SIGTERM or Ctrl-C; a SQL store also records
	the worker's heartbeat, which ``status`` lists."""
	import_handler_modules(modules)
	policy = RetryPolicy(max_attempts=max_attempts, delays=_parse_delays(retry_delays))
	with ctx.session() as (connection, store):
		workers = worker_table(store)
		if workers is not None:
			workers.prune()  # runs that ended (or died) a week ago
		worker = Worker(
			connection,
			default_registry,
			store,
			queues=queues or None,
			retry=policy,
			notifier=build_notifier(sentry_dsn),
			options=WorkerOptions(prefetch=prefetch, default_queue_type=queue_type),
			report_every=report_every or None,
			on_heartbeat=workers.record if workers is not None else None,
		)
		worker.install_signal_handlers()
		try:
			stats = worker.run()
		finally:
			worker.close()
	click.echo(
		f"stopped: {stats.processed} processed, {stats.duplicates} duplicates, {stats.retried} retried, {stats.dead} dead"
	)


@main.command()
@click.argument("message_type")
@click.argument("payload", default="{}")
@click.option("--routing-key", default=None, help="Defaults to MESSAGE_TYPE.")
@click.option("--correlation-id", default=None)
@pass_context
def publish(
	ctx: Context, message_type: str, payload: str, routing_key: str | None, correlation_id: str | None
) -> None:
	"""Publish MESSAGE_TYPE with a JSON PAYLOAD and wait for the broker's confirm."""
	try:
		data = json.loads(payload)
	except json.JSONDecodeError as e:
		raise click.BadParameter(f"not JSON: {e}", param_hint="PAYLOAD")
	message = Message(type=message_type, payload=data, source=ctx.source, correlation_id=correlation_id)
	with ctx.session() as (connection, store):
		with Publisher(
			connection, store, exchange=ctx.exchange, source=ctx.source, notifier=build_notifier()
		) as publisher:
			publisher.publish(message, routing_key=routing_key)  # PUBLISHED is written as it closes
	click.echo(f"published {message.id} to {ctx.exchange} with key {routing_key or message_type}")


@main.command()
@click.argument("message_id", required=False)
@click.option("--queue", default=None, help="The consuming queue (when the message reached several).")
@click.option(
	"--status",
	"statuses",
	multiple=True,
	type=click.Choice([s.value for s in Status], case_sensitive=False),
	help="Filter (repeatable, any case); default dead and failed.",
)
@click.option("--direction", type=click.Choice(["in", "out"]), default=None)
@click.option("--routing-key", default=None, help="Exact key or a topic pattern (sales_order.*).")
@click.option(
	"--since",
	type=click.DateTime(TIME_FORMATS),
	default=None,
	help="Created at or after; UTC unless an offset is given.",
)
@click.option(
	"--until",
	type=click.DateTime(TIME_FORMATS),
	default=None,
	help="Created at or before; UTC unless an offset is given.",
)
@click.option("--limit", default=1000, show_default=True)
@click.option("--force", is_flag=True, help="Also replay messages already processed or published.")
@click.option("--dry-run", is_flag=True, help="List what would be replayed; send nothing.")
@click.option("--by", "actor", default="cli", help="Who replays (recorded in the replay headers).")
@pass_context
def replay(
	ctx: Context,
	message_id: str | None,
	queue: str | None,
	statuses: tuple[str, ...],
	direction: str | None,
	routing_key: str | None,
	since: datetime | None,
	until: datetime | None,
	limit: int,
	force: bool,
	dry_run: bool,
	actor: str,
) -> None:
	"""Replay MESSAGE_ID, or every stored message matching the filters."""
	with ctx.session() as (connection, store):
		replayer = Replayer(Publisher(connection, store, exchange=ctx.exchange), store, actor=actor)
		if message_id:
			results = [replayer.replay(message_id, queue, force=force, dry_run=dry_run)]
		else:
			query = MessageFilter(
				direction=Direction(direction) if direction else None,
				statuses=tuple(Status(s) for s in statuses) or (Status.DEAD, Status.FAILED),
				routing_key=routing_key,
				queue=queue,
				since=_utc(since),
				until=_utc(until),
				limit=limit,
			)
			results = replayer.replay_matching(query, force=force, dry_run=dry_run)
	for r in results:
		state = "sent" if r.sent else "not sent"
		click.echo(
			f"{r.message_id} {r.queue or '(outgoing)'} was {r.previous_status.value}: {state} ({r.detail})"
		)
	click.echo(f"{sum(r.sent for r in results)} of {len(results)} replayed")
	if not dry_run:
		# A replayed message no longer counts as dead: its parked copy left <queue>.dead.
		click.echo(f"{sum(r.dead_copy_removed for r in results)} dead copies removed")


@main.command()
@click.option(
	"-m",
	"--module",
	"modules",
	multiple=True,
	envvar="EDA_HANDLER_MODULES",
	help="Also show the depth of these handlers' queues.",
)
@pass_context
def status(ctx: Context, modules: tuple[str, ...]) -> None:
	"""Message counts per direction and status, workers (alive, stale or stopped) and queue depths."""
	import_handler_modules(modules)
	with ctx.session() as (connection, store):
		counts = store.counts()
		click.echo("messages in the store:")
		for (direction, state), count in sorted(
			counts.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)
		):
			click.echo(f"  {direction.value:<4}{state.value:<11}{count:>8}")
		if not counts:
			click.echo("  (none)")
		workers = worker_table(store)
		if workers is not None:
			_echo_workers(workers.workers(limit=WORKERS_SHOWN + 1))
		queues = sorted(
			{s.queue for s in default_registry}
			| {
				r.queue
				for r in store.find(MessageFilter(direction=Direction.INCOMING, limit=10000))
				if r.queue
			}
		)
		declarer = TopologyDeclarer(connection)
		click.echo("queue depths (ready messages):")
		for queue in queues:
			for name in (queue, dead_letter_queue(queue)):
				depth = declarer.queue_depth(name)
				click.echo(f"  {name:<40}{'missing' if depth is None else depth:>8}")
		declarer.close()


@main.command()
@pass_context
def relay(ctx: Context) -> None:
	"""Send every PENDING outgoing message in the store (after an outage, or from an outbox)."""
	with ctx.session() as (connection, store):
		sent = OutboxRelay(Publisher(connection, store, exchange=ctx.exchange), store).drain()
	click.echo(f"relayed {sent} pending messages")


@main.command()
@click.option("-m", "--module", "modules", multiple=True, required=True, envvar="EDA_HANDLER_MODULES")
@pass_context
def declare(ctx: Context, modules: tuple[str, ...]) -> None:
	"""Declare the exchanges and queues of the handlers in MODULES without consuming."""
	import_handler_modules(modules)
	with ctx.session() as (connection, store):
		Worker(connection, default_registry, store).declare()
	click.echo(f"declared {len(default_registry)} queues with their retry and dead-letter queues")


@main.command()
@click.option("--keep", is_flag=True, help="Keep the demo's queues and store file afterwards.")
@pass_context
def demo(ctx: Context, keep: bool) -> None:
	"""Publish -> consume -> fail -> retry -> dead-letter -> fix -> replay -> processed, on the local broker."""
	from frappe_eda.cli.demo import run_demo

	logging.getLogger("frappe_eda").setLevel(logging.WARNING)  # the demo narrates; keep the log quiet
	run_demo(ctx.settings, ctx.store_url if ctx.store_url != DEFAULT_STORE_URL else None, keep=keep)


WORKERS_SHOWN = 20


def _echo_workers(beats: list[WorkerBeat]) -> None:
	"""One line per worker run, the most recently seen first: alive, stale (no heartbeat for three
	intervals, at least a minute: dead or hung) or stopped."""
	click.echo("workers (by last heartbeat):")
	now = datetime.now(timezone.utc)
	for beat in beats[:WORKERS_SHOWN]:
		state = beat.state(now)
		seen = f"last seen {_ago(beat.age(now))} ago"
		label = f"{state} ({seen})"
		click.echo(
			f"  {beat.worker_id}  {label}; queues {', '.join(beat.queues) or '-'}; {beat.handled} handled "
			f"({beat.processed} processed, {beat.duplicates} duplicates, {beat.retried} retried, {beat.dead} dead)"
			f"; started {beat.started_at:%Y-%m-%d %H:%M:%S} UTC"
		)
	if len(beats) > WORKERS_SHOWN:
		click.echo("  (older ones not shown)")
	if not beats:
		click.echo("  (none recorded)")


def _ago(seconds: float) -> str:
	if seconds < 120:
		return f"{seconds:.0f} s"
	if seconds < 7200:
		return f"{seconds / 60:.0f} min"
	if seconds < 172_800:
		return f"{seconds / 3600:.0f} h"
	return f"{seconds / 86_400:.0f} d"


def _parse_delays(text: str) -> tuple[float, ...]:
	try:
		return tuple(float(part) for part in text.split(",") if part.strip())
	except ValueError:
		raise click.BadParameter(
			f"{text!r} is not a comma-separated list of seconds", param_hint="--retry-delays"
		)


def _utc(value: datetime | None) -> datetime | None:
	return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def run() -> None:
	"""Entry point that turns our errors into one readable line instead of a traceback."""
	try:
		main(standalone_mode=True)
	except EdaError as e:
		click.echo(f"error: {e}", err=True)
		sys.exit(1)


def _routes(values: tuple[str, ...], option: str) -> tuple[Route, ...]:
	try:
		return tuple(Route.parse(value) for value in values)
	except EdaError as e:
		raise click.UsageError(f"{option} {e}") from None


@main.command("broker-user")
@click.argument("user")
@click.option(
	"--management-url",
	envvar="EDA_MANAGEMENT_URL",
	help="RabbitMQ's management API as an administrator (http://admin@host:15672); the password is asked "
	"for when the URL has none, used for these calls only and never stored.",
)
@click.option(
	"--queue",
	"queues",
	multiple=True,
	help="A queue the service consumes (its retry and dead queues follow).",
)
@click.option(
	"--publish",
	"publishes",
	multiple=True,
	metavar="EXCHANGE:KEY",
	help="Keys it publishes (topic patterns).",
)
@click.option(
	"--bind", "binds", multiple=True, metavar="EXCHANGE:KEY", help="Keys its queues are bound with."
)
@click.option(
	"--password", default=None, help="Set this password (default: a new user gets a generated one)."
)
@click.option(
	"--print", "print_only", is_flag=True, help="Print rabbitmqctl commands instead of calling the API."
)
@click.pass_obj
def broker_user(
	ctx: Context,
	user: str,
	management_url: str | None,
	queues: tuple[str, ...],
	publishes: tuple[str, ...],
	binds: tuple[str, ...],
	password: str | None,
	print_only: bool,
) -> None:
	"""Create or update USER with the least its traffic needs, in the vhost of --url (idempotent)."""
	publish_routes, bind_routes = _routes(publishes, "--publish"), _routes(binds, "--bind")
	traffic = ServerTraffic(
		user,
		queues=queues,
		publishes=publish_routes,
		binds=bind_routes,
		topic_exchanges=frozenset(r.exchange for r in (*publish_routes, *bind_routes)),
	)
	report = provision_or_print(traffic, ctx.settings.vhost, management_url, password, print_only)
	if report is not None and report.password:
		click.echo(f"password of {user!r} (shown once): {report.password}")


def provision_or_print(
	traffic: ServerTraffic, vhost: str, management_url: str | None, password: str | None, print_only: bool
) -> ProvisionReport | None:
	"""What both broker-user commands do (this one and ``bench eda broker-user``): print the rabbitmqctl
	commands (None), or create or update the user through the management API, asking for the
	administrator's password when the URL has none, and print what was granted."""
	if print_only:
		for command in rabbitmqctl_commands(vhost, traffic):
			click.echo(command)
		return None
	if not management_url:
		raise click.UsageError("give --management-url (or EDA_MANAGEMENT_URL), or --print")
	api = ManagementApi(management_url)
	if not api.password:
		api.password = click.prompt(f"password of {api.user or 'the administrator'}", hide_input=True)
	try:
		report = provision(api, vhost, traffic, password)
	except EdaError as e:
		raise click.ClickException(str(e)) from None
	click.echo(report.summary())
	return report


@main.command("signing-key")
def signing_key() -> None:
	"""Print a new Ed25519 signing key (a secret: keep it where passwords go) and its public key."""
	key = SigningKey.generate()
	click.echo(f"signing key (secret): {key.text}")
	click.echo(f"public key:           {key.public.text}")
