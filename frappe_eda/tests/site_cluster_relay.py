# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Issue #26's last row on a real site: ``bench eda relay`` while a quorum queue's leader node is lost.

Documents are saved on the site (a ToDo each, in a commit of its own; an EDA Event Rule puts one message
per document in the outbox, in the document's transaction) while ``bench --site SITE eda relay``
relays them to a throw-away three-node RabbitMQ cluster (``tests.faults.cluster``), connected first to
the node that leads the rule's quorum queue. A third of the way in that node is SIGKILLed, and started
again 10 s later. A plain pika consumer on another node counts what reaches the queue, per message id.
At the end every message must be Published on the site and delivered once: ``failed`` (refused: left
Failed on the site), ``pending``, ``lost`` and ``twice`` must be 0. A message the broker kept nacking
past the publisher's 15 s is Failed with ``StillNacked`` for a while and sent again by the relay after
its 60 s rest; the run waits for that (``--settle``), and ``still_nacked`` says how many it happened to.

Two halves, run by two interpreters:

- The site's half (``setup``, ``save_documents``, ``count``, ``teardown``) runs in the bench through
  ``bench --site SITE execute frappe_eda.tests.site_cluster_relay.FUNCTION --kwargs '{...}'``. It points
  the site at the cluster through ``site_config.json`` (a copy of the file is kept beside it and put back
  by ``teardown``), adds the rule, saves the documents, counts the outbox and removes it all.
- The driver (``main``) runs with the core's environment, which has the cluster helper and pika, from
  the repository (it starts ``bench`` commands itself)::

      .venv/bin/python -m frappe_eda.tests.site_cluster_relay \\
          --bench PATH/TO/BENCH --site head.localhost --count 1500 --rate 100

  (``--relay-on follower`` connects the relay to another node than the leader: its connection survives
  and only its channel sees the queue lose its leader.) It starts the cluster (``--runs`` times, one
  cluster per run, about 20 s each to boot), runs the scenario, prints one JSON
  line per run and a row for docs/reliability.md, and cleans up (the site, the cluster, its processes)
  whatever happens. No worker or relay of the site may run meanwhile (it would relay to the cluster
  too); a site whose teardown did not run is put back with
  ``bench --site SITE execute frappe_eda.tests.site_cluster_relay.teardown``.

Nothing here imports Frappe at import time: the driver imports this module outside the bench.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

MODULE = "frappe_eda.tests.site_cluster_relay"
DOCTYPE = "ToDo"
PREFIX = "eda-cluster-relay "  # every ToDo of a run: "eda-cluster-relay TAG N"
CONFIG_BACKUP = "site_config.json.before-cluster-relay"
RULE_CONDITION = f'doc.description and doc.description.startswith("{PREFIX}")'
ROUTING_KEY = "todo.after_insert"  # the rule's default key, "{doctype}.{event}"
RESTART_AFTER = 10.0  # the leader's node comes back this long after its SIGKILL (the operator)


# --- the site's half: run with bench execute --------------------------------------------------------


def setup(amqp_url: str, broker_nodes: list[str], exchange: str, out: str | None = None) -> dict[str, Any]:
	"""Point the site at the cluster (``site_config.json``: ``eda_amqp_url`` first, ``eda_broker_nodes``
	the others, ``eda_queue_type`` quorum, ``eda_enabled``), keeping the file as it was beside it, and add
	an enabled EDA Event Rule: ToDo after_insert to ``exchange`` for this check's ToDos only."""
	import frappe

	path = Path(frappe.get_site_path("site_config.json"))
	backup = path.with_name(CONFIG_BACKUP)
	if backup.exists():
		frappe.throw(f"{backup} exists: a run was not torn down (run teardown first)")
	shutil.copy2(path, backup)
	config = json.loads(path.read_text())
	config.update(
		eda_amqp_url=amqp_url, eda_broker_nodes=list(broker_nodes), eda_queue_type="quorum", eda_enabled=1
	)
	_write_json(path, config)
	rule = frappe.get_doc(
		{
			"doctype": "EDA Event Rule",
			"document_type": DOCTYPE,
			"event": "after_insert",
			"enabled": 1,
			"exchange": exchange,
			"condition": RULE_CONDITION,
			"send_fields": "description",
		}
	).insert(ignore_permissions=True)
	frappe.db.commit()
	return _result({"rule": rule.name, "since": frappe.utils.now()}, out)


def save_documents(
	tag: str, count: int = 1500, rate: float = 100.0, out: str | None = None
) -> dict[str, Any]:
	"""Insert ``count`` ToDos at ``rate`` a second, each committed on its own (its outbox record is written
	in the same transaction; the commit wakes the relay). Returns how many were saved and the longest
	save with its commit: the outbox never makes a user wait for the broker."""
	import frappe

	started = time.monotonic()
	longest = longest_at = 0.0
	saved = 0
	for n in range(1, count + 1):
		due = started + n / rate
		if due > time.monotonic():
			time.sleep(due - time.monotonic())
		began = time.monotonic()
		frappe.get_doc({"doctype": DOCTYPE, "description": f"{PREFIX}{tag} {n}"}).insert(
			ignore_permissions=True
		)
		frappe.db.commit()
		if time.monotonic() - began > longest:
			longest, longest_at = time.monotonic() - began, began - started
		saved += 1
	took = time.monotonic() - started
	summary = {
		"saved": saved,
		"seconds": round(took, 2),
		"longest_save": round(longest, 3),
		"longest_save_began_at": round(longest_at, 2),
		"started_at": time.time() - took,
	}
	return _result(summary, out)


def count(exchange: str, out: str | None = None) -> dict[str, Any]:
	"""The rule's outgoing EDA Messages by status, the Failed ones' errors, and every EDA Error their ids
	ever had (a StillNacked message sent again later keeps its error, resolved). With ``out``, the
	message ids with their status and creation time go to that file too."""
	import frappe

	frappe.db.rollback()  # a fresh snapshot: what the relay committed
	rows = frappe.get_all(
		"EDA Message",
		filters={"direction": "Outgoing", "exchange": exchange},
		fields=["message_id", "status", "resolved", "created_at", "last_error", "reference_name"],
		limit_page_length=0,
	)
	ids = [r.message_id for r in rows]
	errors: Counter[str] = Counter()
	errored: set[str] = set()
	for start in range(0, len(ids), 500):
		for e in frappe.get_all(
			"EDA Error",
			filters={"direction": "Outgoing", "message_id": ["in", ids[start : start + 500]]},
			fields=["message_id", "exception_type"],
			limit_page_length=0,
		):
			errors[(e.exception_type or "?").rsplit(".", 1)[-1]] += 1
			errored.add(e.message_id)
	statuses = Counter(r.status for r in rows)
	failed = [r for r in rows if r.status == "Failed"]
	summary = {
		"messages": len(rows),
		"statuses": dict(statuses),
		"failed_errors": dict(Counter((r.last_error or "").split(":", 1)[0][:80] for r in failed)),
		"errors": dict(errors),
		"messages_with_errors": len(errored),
		"documents": len({r.reference_name for r in rows}),
	}
	if out:
		listing = {
			r.message_id: {
				"status": r.status,
				"created_at": r.created_at.isoformat(),
				"errored": r.message_id in errored,
			}
			for r in rows
		}
		Path(out).with_suffix(".ids.json").write_text(json.dumps(listing))
	return _result(summary, out)


def teardown(exchange: str | None = None, since: str | None = None, out: str | None = None) -> dict[str, Any]:
	"""Remove this check's ToDos, rules, their EDA Messages and EDA Errors (of ``exchange``, else of every
	rule this check added), the desk notices their failures raised after ``since``, and put
	``site_config.json`` back as it was."""
	import frappe

	frappe.db.rollback()
	rules = frappe.get_all(
		"EDA Event Rule",
		filters={"document_type": DOCTYPE, "condition": RULE_CONDITION},
		fields=["name", "exchange"],
	)
	exchanges = {exchange} if exchange else {r.exchange for r in rules if r.exchange}
	removed: Counter[str] = Counter()
	for name in exchanges:
		ids = frappe.get_all(
			"EDA Message", filters={"direction": "Outgoing", "exchange": name}, pluck="message_id"
		)
		for start in range(0, len(ids), 500):
			chunk = ids[start : start + 500]
			removed["EDA Error"] += _delete(
				"EDA Error", {"direction": "Outgoing", "message_id": ["in", chunk]}
			)
		removed["EDA Message"] += _delete("EDA Message", {"direction": "Outgoing", "exchange": name})
	for rule in rules:
		frappe.delete_doc("EDA Event Rule", rule.name, ignore_permissions=True, force=True)
		removed["EDA Event Rule"] += 1
	removed[DOCTYPE] = _delete(DOCTYPE, {"description": ["like", f"{PREFIX}%"]})
	if since:
		removed["Notification Log"] = _delete(
			"Notification Log", {"creation": [">=", since], "subject": ["like", "EDA: %"]}
		)
	frappe.db.commit()
	path = Path(frappe.get_site_path("site_config.json"))
	backup = path.with_name(CONFIG_BACKUP)
	if backup.exists():
		shutil.copy2(backup, path)
		backup.unlink()
		removed["site_config.json restored"] = 1
	frappe.clear_cache()
	return _result(dict(removed), out)


def _delete(doctype: str, filters: dict[str, Any]) -> int:
	import frappe

	names = frappe.get_all(doctype, filters=filters, pluck="name", limit_page_length=0)
	for start in range(0, len(names), 500):
		frappe.db.delete(doctype, {"name": ["in", names[start : start + 500]]})
	return len(names)


def _write_json(path: Path, value: Any) -> None:
	temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
	temporary.write_text(json.dumps(value, indent=1, sort_keys=True))
	os.replace(temporary, path)


def _result(value: dict[str, Any], out: str | None) -> dict[str, Any]:
	if out:
		Path(out).write_text(json.dumps(value, default=str))
	return value


# --- the driver: run with the core's environment (python -m frappe_eda.tests.site_cluster_relay) ------


class Bench:
	"""``bench --site SITE ...`` through the bench's own interpreter, from its sites folder."""

	def __init__(self, bench: Path, site: str, workdir: Path) -> None:
		self.sites = bench / "sites"
		self.python = bench / "env" / "bin" / "python"
		self.site = site
		self.workdir = workdir
		self.env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

	def command(self, *args: str) -> list[str]:
		return [str(self.python), "-m", "frappe.utils.bench_helper", "frappe", "--site", self.site, *args]

	def execute(
		self, function: str, timeout: float = 300, out: Path | None = None, **kwargs: Any
	) -> dict[str, Any]:
		"""Run a function of this module on the site; its result (written to a file, not parsed from the
		command's output, which Frappe may add to)."""
		out = out or self.workdir / f"{function}-{uuid.uuid4().hex[:6]}.json"
		self.start_execute(function, out, **kwargs).wait(timeout=timeout)
		if not out.exists():
			raise RuntimeError(f"{function} wrote no result; see {out.with_suffix('.log')}")
		return json.loads(out.read_text())

	def start_execute(self, function: str, out: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
		kwargs["out"] = str(out)
		return self.start(
			out.with_suffix(".log"),
			"execute",
			f"{MODULE}.{function}",
			"--kwargs",
			json.dumps(kwargs),
		)

	def start(self, log: Path, *args: str) -> subprocess.Popen[bytes]:
		with log.open("ab") as output:
			return subprocess.Popen(
				self.command(*args),
				cwd=self.sites,
				env=self.env,
				stdout=output,
				stderr=subprocess.STDOUT,
				start_new_session=True,
			)


class Consumer:
	"""A pika consumer of the quorum queue in a thread: every delivery's message id, redelivered flag,
	arrival time and the message's creation time. It moves to the next node when its connection goes."""

	def __init__(self, urls: list[str], queue: str) -> None:
		self.urls = urls
		self.queue = queue
		self.deliveries: list[tuple[str, bool, float, float]] = []
		self.reconnects = 0
		self._stop = threading.Event()
		self._thread = threading.Thread(target=self._run, name="consumer", daemon=True)

	def start(self) -> Consumer:
		self._thread.start()
		return self

	def stop(self) -> None:
		self._stop.set()
		self._thread.join(timeout=30)

	def distinct(self) -> int:
		return len({d[0] for d in list(self.deliveries)})

	def _run(self) -> None:
		import pika

		index = 0
		while not self._stop.is_set():
			url = self.urls[index % len(self.urls)]
			try:
				connection = pika.BlockingConnection(pika.URLParameters(url))
				try:
					channel = connection.channel()
					channel.basic_qos(prefetch_count=200)
					channel.basic_consume(self.queue, self._on_message)
					while not self._stop.is_set():
						connection.process_data_events(time_limit=0.2)
				finally:
					if connection.is_open:
						connection.close()
			except Exception:
				if self._stop.is_set():
					return
				self.reconnects += 1
				index += 1
				time.sleep(0.5)

	def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
		arrived = time.time()
		try:
			created = datetime.fromisoformat(json.loads(body)["created_at"]).timestamp()
		except (ValueError, KeyError, TypeError):
			created = arrived
		self.deliveries.append((properties.message_id or "", bool(method.redelivered), arrived, created))
		channel.basic_ack(method.delivery_tag)


def run_once(args: argparse.Namespace, number: int) -> dict[str, Any]:
	import pika

	sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.faults
	from tests.faults.cluster import RabbitCluster

	workdir = Path(args.workdir) / f"run-{number}-{uuid.uuid4().hex[:6]}"
	workdir.mkdir(parents=True)
	bench = Bench(Path(args.bench), args.site, workdir)
	tag = uuid.uuid4().hex[:8]
	exchange, queue, vhost = f"eda.cluster-relay.{tag}", f"eda.cluster-relay.{tag}.q", "eda-relay"
	cluster = RabbitCluster(3)
	processes: list[subprocess.Popen[bytes]] = []
	consumer: Consumer | None = None
	since: str | None = None
	result: dict[str, Any] = {"run": number, "workdir": str(workdir)}
	try:
		began = time.monotonic()
		cluster.start()
		cluster.add_vhost(vhost)
		urls = cluster.urls(vhost)
		result["cluster_start_seconds"] = round(time.monotonic() - began, 1)
		# The queue first, so the relay's mandatory publishes are routable; its leader is the node that
		# declared it, and the relay connects there first (as the services of issue #26 did).
		with pika.BlockingConnection(pika.URLParameters(urls[0])) as connection:
			channel = connection.channel()
			channel.exchange_declare(exchange, "topic", durable=True)
			channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
			channel.queue_bind(queue, exchange, ROUTING_KEY)
		leader = cluster.leader(queue, vhost)
		first = cluster.nodes.index(leader)
		# The relay's node list starts at the leader (issue #26), or with --relay-on follower at another node:
		# its connection then survives and only its channel sees the queue lose its leader.
		first += args.relay_on == "follower"
		ordered = urls[first:] + urls[:first]
		relay_node = cluster.nodes[first % len(urls)]
		consumer = Consumer(ordered[1:] + ordered[:1], queue).start()
		site = bench.execute("setup", amqp_url=ordered[0], broker_nodes=ordered[1:], exchange=exchange)
		since = site["since"]
		relay_log = workdir / "relay.log"
		relay = bench.start(relay_log, "eda", "relay")
		processes.append(relay)
		client = f"frappe_eda:{args.site}"
		_wait(lambda: relay_node in cluster.connection_nodes(client), 120, "the relay to connect")
		saver_out = workdir / "save.json"
		saver = bench.start_execute("save_documents", saver_out, tag=tag, count=args.count, rate=args.rate)
		processes.append(saver)
		_wait(lambda: consumer.distinct() >= args.count // 3, 300, "a third of the messages")
		moment, wall = time.monotonic(), time.time()
		cluster.kill_node(leader)
		restarting = cluster.start_later(leader, moment, RESTART_AFTER)
		elected = None
		while time.monotonic() - moment < 60:
			try:
				if cluster.leader(queue, vhost) is not leader:
					elected = time.monotonic() - moment
					break
			except LookupError:
				pass
			time.sleep(0.2)
		saver.wait(timeout=args.count / args.rate + 600)
		restarting.join(timeout=300)
		saved = json.loads(saver_out.read_text())
		settled_by = time.monotonic() + args.settle
		counts: dict[str, Any] = {}
		while time.monotonic() < settled_by:
			if consumer.distinct() >= saved["saved"]:
				time.sleep(5)  # a late copy would still arrive
				counts = bench.execute("count", exchange=exchange)
				if not (counts["statuses"].get("Pending") or counts["statuses"].get("Failed")):
					break
			time.sleep(2)
		settled = time.monotonic() - moment
		_stop(relay)
		consumer.stop()
		out = workdir / "count.json"
		counts = bench.execute("count", exchange=exchange, out=out)
		listing = json.loads(out.with_suffix(".ids.json").read_text())
		result.update(_account(saved, counts, listing, consumer, wall))
		result.update(
			killed=leader.name.split("@")[0],
			relay_on=f"{args.relay_on} ({relay_node.name.split('@')[0]})",
			back_after=round(restarting.seconds if restarting.seconds is not None else -1, 1),
			new_leader_within=None if elected is None else round(elected, 1),
			settled_after_kill=round(settled, 1),
			consumer_reconnects=consumer.reconnects,
			relay_log=_log_summary(relay_log),
		)
		return result
	finally:
		for process in processes:
			_stop(process)
		if consumer is not None:
			consumer.stop()
		try:
			result["teardown"] = bench.execute("teardown", exchange=exchange, since=since)
		finally:
			cluster.close()


def _account(
	saved: dict[str, Any],
	counts: dict[str, Any],
	listing: dict[str, dict[str, Any]],
	consumer: Consumer,
	killed_at: float,
) -> dict[str, Any]:
	copies = Counter(d[0] for d in consumer.deliveries)
	latency = [(d[2] - d[3], d[3]) for d in consumer.deliveries]
	arrivals = sorted(d[2] for d in consumer.deliveries)
	gap = max((b - a for a, b in itertools.pairwise(arrivals)), default=0.0)
	worst = max(latency, default=(0.0, 0.0))
	after = [a for a in arrivals if a > killed_at]
	statuses = counts["statuses"]
	return {
		"saved": saved["saved"],
		"save_seconds": saved["seconds"],
		"longest_save": saved["longest_save"],
		"longest_save_began_before_kill": round(
			killed_at - saved["started_at"] - saved["longest_save_began_at"], 2
		),
		"first_arrival_after_kill": round(after[0] - killed_at, 2) if after else None,
		"outbox_messages": counts["messages"],
		"published": statuses.get("Published", 0),
		"pending": statuses.get("Pending", 0),
		"failed": statuses.get("Failed", 0),
		"failed_errors": counts["failed_errors"],
		"errors_recorded": counts["errors"],
		"still_nacked": counts["errors"].get("StillNacked", 0),
		"received_distinct": len(copies),
		"deliveries": len(consumer.deliveries),
		"redelivered_flag": sum(1 for d in consumer.deliveries if d[1]),
		"lost": len(set(listing) - set(copies)),
		"unknown_received": len(set(copies) - set(listing)),
		"twice": sum(1 for n in copies.values() if n > 1),
		"longest_wait": round(worst[0], 2),  # created (saved) to received, the slowest message
		"longest_wait_created_after_kill": round(worst[1] - killed_at, 2),
		"longest_gap_between_arrivals": round(gap, 2),
	}


def _log_summary(log: Path) -> dict[str, int]:
	text = log.read_text(errors="replace") if log.exists() else ""
	needles = {
		"nacked": "broker nacked",
		"kept_nacking": "kept nacking",
		"channel_closed": "broker closed the channel",
		"interrupted": "publish interrupted",
		"unavailable": "broker unavailable",
		"relay_failed": "outbox relay failed",
		"traceback": "Traceback",
	}
	return {name: text.count(needle) for name, needle in needles.items()}


def _wait(condition: Any, timeout: float, what: str) -> None:
	deadline = time.monotonic() + timeout
	while time.monotonic() < deadline:
		if condition():
			return
		time.sleep(0.2)
	raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _stop(process: subprocess.Popen[bytes]) -> None:
	if process.poll() is not None:
		return
	os.killpg(process.pid, signal.SIGTERM)  # its own session: bench_helper and anything it started
	try:
		process.wait(timeout=30)
	except subprocess.TimeoutExpired:
		os.killpg(process.pid, signal.SIGKILL)
		process.wait(timeout=30)


def row(results: list[dict[str, Any]]) -> str:
	"""The docs/reliability.md row of the runs (the first run's figures; the notes name every run's)."""
	r = results[0]
	notes = (
		f"killed {r['killed']} (the leader; the relay on the {r['relay_on']}), back after {r['back_after']}s; "
		f"a new leader within {r['new_leader_within']}s; {r['saved']} ToDos saved in {r['save_seconds']}s "
		f"(longest save {r['longest_save']}s); StillNacked {r['still_nacked']}; longest wait of a message "
		f"{r['longest_wait']}s; runs: "
		+ ", ".join(f"{x['saved']}/{x['received_distinct']}/{x['failed']}/{x['twice']}" for x in results)
	)
	return (
		"| cluster: leader's node SIGKILLed while a site's `bench eda relay` sends (Frappe v15), restarted "
		f"10 s later | {r['saved']} | {r['received_distinct']} | 0 | {r['lost']} | {r['twice']} | {r['failed']} "
		f"| {r['first_arrival_after_kill']} s | {notes} |"
	)


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
	parser.add_argument("--bench", required=True, help="the bench folder (with sites/ and env/)")
	parser.add_argument("--site", default="head.localhost")
	parser.add_argument("--count", type=int, default=1500)
	parser.add_argument("--rate", type=float, default=100.0)
	parser.add_argument("--runs", type=int, default=1)
	parser.add_argument(
		"--relay-on", choices=("leader", "follower"), default="leader", help="the node the relay connects to"
	)
	parser.add_argument("--settle", type=float, default=200.0, help="seconds to wait after the saving ends")
	parser.add_argument("--workdir", default=f"/tmp/eda-cluster-relay-{uuid.uuid4().hex[:6]}")
	args = parser.parse_args()
	results = []
	for number in range(1, args.runs + 1):
		result = run_once(args, number)
		print(json.dumps(result, default=str), flush=True)
		results.append(result)
	print(row(results), flush=True)


if __name__ == "__main__":
	main()
