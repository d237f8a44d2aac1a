"""``python -m benchmarks``: frappe_eda against raw pika on the local broker, as ratios in one run.

Absolute numbers drift between runs on a shared machine; each target is a ratio against a baseline
measured minutes earlier in the same process, which is what ``docs/performance.md`` reports.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pika

from benchmarks.baseline import bodies, declare_queue, raw_consume, raw_publish
from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.consumer import Worker, WorkerOptions
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.publisher import Envelope, Publisher
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.topology import TopologyDeclarer, topology_for
from frappe_eda.stores import open_store
from frappe_eda.stores.sql import SqlStore

URL = os.environ.get("EDA_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
MARIADB = os.environ.get("EDA_BENCH_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")
POSTGRES = os.environ.get("EDA_BENCH_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Report:
	rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)
	notes: list[str] = field(default_factory=list)

	def add(self, what: str, ours: str, baseline: str, ratio: str, target: str) -> None:
		self.rows.append((what, ours, baseline, ratio, target))
		print(f"{what:<58} {ours:>14} {baseline:>14} {ratio:>8}  {target}", flush=True)


def rate(count: int, seconds: float) -> float:
	return count / seconds if seconds else float("inf")


class MariaDbDatabase:
	"""A throw-away database for one benchmark run."""

	def __init__(self) -> None:
		from sqlalchemy import create_engine, text

		self.name = f"eda_bench_{uuid.uuid4().hex[:8]}"
		self._engine = create_engine(MARIADB)
		self._text = text
		with self._engine.begin() as db:
			db.execute(text(f"CREATE DATABASE {self.name} CHARACTER SET utf8mb4"))

	@property
	def url(self) -> str:
		return f"{MARIADB}/{self.name}?charset=utf8mb4"

	def drop(self) -> None:
		with self._engine.begin() as db:
			db.execute(self._text(f"DROP DATABASE IF EXISTS {self.name}"))
		self._engine.dispose()


def fresh_store(url: str) -> SqlStore:
	"""An empty store for one measurement (tables of its own), so no row depends on the ones before it."""
	if url.startswith("sqlite"):
		return SqlStore(url.replace(".sqlite3", f"-{uuid.uuid4().hex[:8]}.sqlite3"))
	return SqlStore(url, table_prefix=f"eda_{uuid.uuid4().hex[:8]}_")


def _discard(store: SqlStore) -> None:
	"""Close a measurement's store; on PostgreSQL (a shared database) drop its tables too."""
	if store.engine.dialect.name == "postgresql":
		store.metadata.drop_all(store.engine)
	store.close()


def store_urls(folder: Path) -> dict[str, str]:
	return {"SQLite": f"sqlite:///{folder / 'bench.sqlite3'}"}


def bench_publish(
	report: Report, connection: BrokerConnection, count: int, stores: dict[str, str], rounds: int
) -> None:
	"""Each round measures the baselines and then ours, so a slow minute of the machine hits both; the
	table shows the median of the rounds' ratios."""
	exchange, queue = f"bench-{uuid.uuid4().hex[:6]}.pub", f"bench-{uuid.uuid4().hex[:6]}.pub"
	channel = connection.channel()
	declare_queue(channel, exchange, queue)
	payloads = bodies(count)
	each_count = max(200, count // 10)
	raw: list[float] = []
	raw_each: list[float] = []
	ours: dict[str, list[float]] = {label: [] for label in stores}
	single: dict[str, list[float]] = {label: [] for label in stores}
	single_behind: dict[str, list[float]] = {label: [] for label in stores}
	behind: dict[str, list[float]] = {label: [] for label in stores}
	for _ in range(rounds):
		connection.close()  # raw pika gets the process to itself, as a hand-written service would
		raw.append(rate(count, raw_publish(URL, exchange, payloads, confirm_each=False)))
		raw_each.append(
			rate(each_count, raw_publish(URL, exchange, payloads[:each_count], confirm_each=True))
		)
		connection.open()
		connection.channel().queue_purge(queue)
		for label, url in stores.items():
			store = fresh_store(url)
			publisher = Publisher(connection, store, exchange=exchange)
			messages = [Message("bench.item", {"n": n, "text": "x" * 100}) for n in range(count)]
			started = time.perf_counter()
			for chunk in range(0, count, 1000):
				publisher.publish_many(messages[chunk : chunk + 1000])
			ours[label].append(rate(count, time.perf_counter() - started))
			connection.channel().queue_purge(queue)
			# One message per call, as a web service publishing one event per request does (issue #13).
			started = time.perf_counter()
			for message in messages[:each_count]:
				publisher.publish(message)
			single[label].append(rate(each_count, time.perf_counter() - started))
			publisher.flush()
			connection.channel().queue_purge(queue)
			# The same with the PUBLISHED status written by the next call (status_behind=True).
			deferred = Publisher(connection, store, exchange=exchange, status_behind=True)
			later = [Message("bench.item", {"n": n, "text": "x" * 100}) for n in range(each_count)]
			started = time.perf_counter()
			for message in later:
				deferred.publish(message)
			single_behind[label].append(rate(each_count, time.perf_counter() - started))
			deferred.close()
			connection.channel().queue_purge(queue)
			# The same, returning once the PENDING row is durable and the message on the socket.
			fresh = [Message("bench.item", {"n": n, "text": "x" * 100}) for n in range(each_count)]
			started = time.perf_counter()
			for message in fresh:
				publisher.publish(message, wait=False)
			publisher.flush()
			behind[label].append(rate(each_count, time.perf_counter() - started))
			publisher.close()
			_discard(store)
			connection.channel().queue_purge(queue)
	for label in stores:
		report.add(
			f"publish + confirm + record ({label}) vs raw unconfirmed",
			f"{statistics.median(ours[label]):,.0f}/s",
			f"{statistics.median(raw):,.0f}/s",
			f"{_median_ratio(ours[label], raw):.2f}x",
			">= 0.7x",
		)
		report.add(
			f"publish + confirm + record ({label}) vs raw confirm-each",
			f"{statistics.median(ours[label]):,.0f}/s",
			f"{statistics.median(raw_each):,.0f}/s",
			f"{_median_ratio(ours[label], raw_each):.1f}x",
			">= 5x",
		)
	for label in stores:
		report.add(
			f"publish() one at a time + record ({label}) vs raw confirm-each",
			f"{statistics.median(single[label]):,.0f}/s",
			f"{statistics.median(raw_each):,.0f}/s",
			f"{_median_ratio(single[label], raw_each):.2f}x",
			">= 0.8x (#13)",
		)
		report.add(
			f"publish(), status_behind=True, one at a time + record ({label}) vs raw confirm-each",
			f"{statistics.median(single_behind[label]):,.0f}/s",
			f"{statistics.median(raw_each):,.0f}/s",
			f"{_median_ratio(single_behind[label], raw_each):.2f}x",
			">= 0.8x (#13)",
		)
		report.add(
			f"publish(wait=False) one at a time + record ({label}) vs raw confirm-each",
			f"{statistics.median(behind[label]):,.0f}/s",
			f"{statistics.median(raw_each):,.0f}/s",
			f"{_median_ratio(behind[label], raw_each):.2f}x",
			">= 0.8x (#13)",
		)
	channel = connection.channel()
	channel.queue_delete(queue)
	channel.exchange_delete(exchange)


def bench_consume(
	report: Report, connection: BrokerConnection, count: int, stores: dict[str, str], rounds: int
) -> None:
	prefix = f"bench-{uuid.uuid4().hex[:6]}"
	exchange = f"{prefix}.ex"
	payloads = bodies(count)
	raw_queue = f"{prefix}.raw"
	# The same prefetch as our worker's: a fair baseline gets the same read-ahead from the broker.
	prefetch = WorkerOptions().prefetch
	raw: list[float] = []
	ours: dict[str, list[float]] = {label: [] for label in stores}
	for _ in range(rounds):
		declare_queue(connection.channel(), exchange, raw_queue)
		connection.close()
		_fill(raw_queue, payloads)
		raw.append(rate(count, raw_consume(URL, raw_queue, count, prefetch=prefetch)))
		connection.open()
		connection.channel().queue_delete(raw_queue)
		for label, url in stores.items():
			store = fresh_store(url)
			registry = HandlerRegistry()
			queue = f"{prefix}.{label.lower()}"
			registry.subscribe("bench.#", queue=queue, exchange=f"{exchange}.{label.lower()}")(
				lambda message: None
			)
			worker = Worker(connection, registry, store, options=WorkerOptions(poll_seconds=0.5))
			worker.declare()
			# Fresh ids every round, or the inbox would rightly skip them as duplicates.
			_fill(queue, bodies(count), f"{exchange}.{label.lower()}")
			started = time.perf_counter()
			stats = worker.run(until=lambda s: s.handled >= count, idle_timeout=30)
			ours[label].append(rate(stats.processed, time.perf_counter() - started))
			worker.close()
			TopologyDeclarer(connection).delete(topology_for(registry, RetryPolicy()))
			_discard(store)
			if stats.dead or stats.duplicates:
				report.notes.append(
					f"consume ({label}): {stats.dead} dead-lettered, {stats.duplicates} duplicates; "
					"the rate is not comparable"
				)
	for label in stores:
		report.add(
			f"consume + inbox + record + ack ({label}) vs raw consume+ack",
			f"{statistics.median(ours[label]):,.0f}/s",
			f"{statistics.median(raw):,.0f}/s",
			f"{_median_ratio(ours[label], raw):.2f}x",
			">= 0.6x",
		)
	connection.channel().exchange_delete(exchange)


def _median_ratio(ours: list[float], baseline: list[float]) -> float:
	return statistics.median(o / b for o, b in zip(ours, baseline, strict=True))


def _fill(queue: str, payloads: list[bytes], exchange: str = "") -> None:
	"""Load a queue through a separate raw connection, then wait until the broker holds them all.

	With ``exchange`` the messages go through it with key ``bench.item`` (as a producer sends them);
	without, straight into the queue."""
	raw = pika.BlockingConnection(pika.URLParameters(URL))
	channel = raw.channel()
	before = channel.queue_declare(queue, passive=True).method.message_count
	properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
	for body in payloads:
		channel.basic_publish(exchange, "bench.item" if exchange else queue, body, properties)
	while channel.queue_declare(queue, passive=True).method.message_count < before + len(payloads):
		raw.sleep(0.05)
	raw.close()


def bench_latency(
	report: Report, connection: BrokerConnection, folder: Path, store_url: str, quick: bool
) -> None:
	run = _WorkerRun.start("latency", connection, folder, store_url)
	# The producer has a store of its own, as a producing service would (SQLite has one writer).
	publisher = Publisher(
		connection, open_store(store_url.replace(".sqlite3", "-producer.sqlite3")), exchange=run.exchange
	)
	steady = 600 if quick else 2000
	interval = 1 / 200
	next_at = time.perf_counter()
	for n in range(steady):
		publisher.publish("bench.latency", {"n": n, "sent_at": time.time(), "phase": "steady"})
		next_at += interval
		pause = next_at - time.perf_counter()
		if pause > 0:
			connection.sleep(pause)
	burst = 5000 if quick else 20000
	for chunk in range(0, burst, 1000):
		publisher.publish_many(
			[
				Message("bench.latency", {"n": n, "sent_at": time.time(), "phase": "burst"})
				for n in range(chunk, chunk + 1000)
			]
		)
	publisher.publish("bench.latency", {"n": -1, "sent_at": time.time(), "phase": "end"})
	run.process.wait(timeout=300)
	samples: dict[str, list[float]] = {"steady": [], "burst": []}
	for line in run.out.read_text().splitlines():
		phase, value = line.split()
		if phase in samples:
			samples[phase].append(float(value) * 1000)
	for phase, label, targets in (
		("steady", "at 200 msg/s", ("< 5 ms", "< 25 ms")),
		("burst", "at saturation", ("-", "-")),
	):
		values = sorted(samples[phase])
		p50, p99 = _pct(values, 50), _pct(values, 99)
		report.add(f"latency publish -> handler, p50, {label}", f"{p50:.2f} ms", "-", "-", targets[0])
		report.add(f"latency publish -> handler, p99, {label}", f"{p99:.2f} ms", "-", "-", targets[1])
		report.add(f"latency publish -> handler, max, {label}", f"{values[-1]:.2f} ms", "-", "-", "-")
	run.declarer.delete(_topology(run.queue, run.exchange))
	run.declarer.close()
	publisher.close()


def bench_memory(
	report: Report, connection: BrokerConnection, folder: Path, store_url: str, quick: bool
) -> None:
	total = 30_000 if quick else 100_000
	run = _WorkerRun.start("memory", connection, folder, store_url, total)
	publisher = Publisher(connection, exchange=run.exchange)
	for _ in range(total // 10_000):
		# Fresh ids every round (the inbox would skip repeats); confirms say the batch is in.
		publisher.send(
			[Envelope(uuid.uuid4().hex, run.exchange, "bench.item", body) for body in bodies(10_000)]
		)
		while (run.declarer.queue_depth(run.queue) or 0) > 20_000:
			connection.sleep(0.5)
	publisher.close()
	run.process.wait(timeout=900)
	marks = dict(line.split() for line in run.out.read_text().splitlines())
	rss10, rss_total = int(marks["10000"]), int(marks[str(total)])
	report.add("worker RSS after 10k messages", f"{rss10 / 1024:.1f} MiB", "-", "-", "-")
	report.add(
		f"worker RSS after {total // 1000}k messages",
		f"{rss_total / 1024:.1f} MiB",
		"-",
		f"{rss_total / rss10:.2f}x",
		"<= 1.10x",
	)
	run.declarer.delete(_topology(run.queue, run.exchange))
	run.declarer.close()


@dataclass
class _WorkerRun:
	"""A worker process of ``benchmarks.worker_process`` on queues of its own, consuming."""

	queue: str
	exchange: str
	out: Path
	process: subprocess.Popen
	declarer: TopologyDeclarer

	@classmethod
	def start(
		cls, mode: str, connection: BrokerConnection, folder: Path, store_url: str, *extra: object
	) -> _WorkerRun:
		prefix = f"bench-{uuid.uuid4().hex[:6]}"
		queue, exchange, out = f"{prefix}.{mode}", f"{prefix}.ex", folder / f"{mode}.txt"
		command = [sys.executable, "-m", "benchmarks.worker_process", mode, URL, store_url, queue, exchange]
		process = subprocess.Popen([*command, str(out), *map(str, extra)], cwd=REPO)
		declarer = TopologyDeclarer(connection)
		# A consumer means the bindings exist too (the worker binds before it consumes).
		while not declarer.consumer_count(queue):
			connection.sleep(0.1)
		return cls(queue, exchange, out, process, declarer)


def _topology(queue: str, exchange: str):
	registry = HandlerRegistry()
	registry.subscribe("bench.#", queue=queue, exchange=exchange)(lambda m: None)
	return topology_for(registry, RetryPolicy())


def _pct(values: list[float], percent: int) -> float:
	if not values:
		return float("nan")
	return (
		statistics.quantiles(values, n=100, method="inclusive")[percent - 1] if len(values) > 1 else values[0]
	)


def write_markdown(report: Report, path: Path, command: str, seconds: float) -> None:
	lines = [
		"# Performance",
		"",
		f"Generated by `{command}` in {seconds:.0f} s on {platform.node() or 'this machine'}: "
		f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}. "
		"Every baseline is raw pika doing the same work on the same broker in the same run; "
		"absolute rates drift between runs, the ratios are what the targets are about. Each throughput "
		"row is the median of several rounds, each round measuring the baseline and then ours, so a slow "
		"minute of the machine weighs on both. Hand-written profiles of the rows that miss their target "
		"are in `performance-gaps.md`.",
		"",
		"| measurement | frappe_eda | raw pika | ratio | target |",
		"|---|---:|---:|---:|---|",
		*(f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in report.rows),
		"",
		*report.notes,
	]
	path.parent.mkdir(parents=True, exist_ok=True)
	# The site's figures come from bench commands inside a Frappe site, not from this script: the
	# section from SITE_SECTION on is kept as it is.
	kept = ""
	if path.exists() and SITE_SECTION in (previous := path.read_text()):
		kept = "\n" + previous[previous.index(SITE_SECTION) :]
	path.write_text("\n".join(lines) + "\n" + kept)


SITE_SECTION = "## Inside a Frappe site"


def main() -> None:
	parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
	parser.add_argument("--quick", action="store_true", help="Smaller counts (about a minute).")
	parser.add_argument("--count", type=int, default=None, help="Messages per throughput measurement.")
	parser.add_argument(
		"--rounds", type=int, default=None, help="Baseline-then-ours rounds per throughput row (median)."
	)
	parser.add_argument("--no-mariadb", action="store_true")
	parser.add_argument("--no-postgres", action="store_true")
	parser.add_argument("--only", choices=["publish", "consume", "latency", "memory"], action="append")
	parser.add_argument("--out", default=None, help="Write the table as Markdown (e.g. docs/performance.md).")
	args = parser.parse_args()
	count = args.count or (5000 if args.quick else 20000)
	rounds = args.rounds or (1 if args.quick else 3)
	started = time.perf_counter()
	report = Report()
	folder = Path(tempfile.mkdtemp(prefix="eda-bench-"))
	mariadb = None if args.no_mariadb else MariaDbDatabase()
	stores = store_urls(folder)
	if mariadb is not None:
		stores["MariaDB"] = mariadb.url
	if not args.no_postgres:
		stores["PostgreSQL"] = POSTGRES  # each measurement gets tables of its own (a unique prefix)
	print(f"{'measurement':<58} {'frappe_eda':>14} {'raw pika':>14} {'ratio':>8}  target")
	connection = BrokerConnection(BrokerSettings(url=URL))
	connection.open()
	try:
		only = set(args.only or ["publish", "consume", "latency", "memory"])
		if "publish" in only:
			bench_publish(report, connection, count, stores, rounds)
		if "consume" in only:
			bench_consume(report, connection, count, stores, rounds)
		if "latency" in only:
			bench_latency(
				report,
				connection,
				folder,
				stores["SQLite"].replace("bench.sqlite3", "latency.sqlite3"),
				args.quick,
			)
		if "memory" in only:
			bench_memory(
				report,
				connection,
				folder,
				stores["SQLite"].replace("bench.sqlite3", "memory.sqlite3"),
				args.quick,
			)
	finally:
		connection.close()
		if mariadb is not None:
			mariadb.drop()
		shutil.rmtree(folder, ignore_errors=True)
	if args.out:
		command = "python -m benchmarks " + " ".join(sys.argv[1:])
		write_markdown(report, Path(args.out), command.strip(), time.perf_counter() - started)


if __name__ == "__main__":
	main()
