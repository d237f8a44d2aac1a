"""Fault scenarios on a three-node RabbitMQ cluster: quorum queues, several producers and workers.

Every scenario runs producer processes and worker processes on one quorum queue of the cluster
(``tests.faults.cluster``), each worker preferring another node, with a MariaDB store they share (the
inbox that keeps each effect once across workers). One fault hits the cluster or the workers
mid-stream; the reconciliation is the single-broker one: each id sent is processed once (one
side-effect row) or dead with an error record; ``lost`` and ``twice`` must be 0. The producers record
what they send in the same store, so a message the broker refused is left FAILED there: ``refused``
counts those, and must be 0 too (issue #26: a leader change is "not now", never "no").
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
from sqlalchemy import create_engine, text

from frappe_eda.messaging.connection import BrokerSettings
from frappe_eda.messaging.store import Direction, MessageFilter, Status
from frappe_eda.stores import open_store
from tests.faults.cluster import Node, RabbitCluster
from tests.faults.harness import REPO, FaultLab, Outcome, in_background, mariadb_store


class ClusterLab(FaultLab):
	"""A vhost and a user of their own on the cluster, a MariaDB store, N workers and M producers."""

	def __init__(self, workdir: Path, cluster: RabbitCluster, store_url: str) -> None:
		self.workdir = workdir
		self.cluster = cluster
		self.vhost = f"eda-cluster-{uuid.uuid4().hex[:6]}"
		self.user = f"eda-fault-{uuid.uuid4().hex[:6]}"
		self.password = f"pw-{secrets.token_hex(12)}"
		cluster.add_vhost(self.vhost)
		cluster.add_user(self.user, self.password, self.vhost)
		self.node_urls = cluster.urls(self.vhost, self.user, self.password)
		self.amqp_url = ",".join(self.node_urls)
		self.prefix = f"fault-{uuid.uuid4().hex[:6]}"
		self.queue, self.exchange = f"{self.prefix}.work", f"{self.prefix}.events"
		self.store_url = store_url
		self.markers = workdir / "markers"
		self.markers.mkdir(exist_ok=True)
		self.logs: list[Path] = []
		self.engine = create_engine(self.store_url)
		open_store(self.store_url).close()
		with self.engine.begin() as db:
			db.execute(text("CREATE TABLE side_effect (message_id VARCHAR(64) NOT NULL)"))
		self.worker = None
		self.workers: dict[int, subprocess.Popen[bytes]] = {}
		self.producers: list[tuple[subprocess.Popen[bytes], Path]] = []

	def close(self) -> None:
		for index in list(self.workers):
			self.stop_one(index)
		for producer, _ in self.producers:
			if producer.poll() is None:
				producer.kill()
				producer.wait()
		self.engine.dispose()
		first = self.cluster.running()[0] if self.cluster.running() else None
		if first is not None:
			try:
				self.cluster.ctl(first, "delete_vhost", self.vhost)
				self.cluster.ctl(first, "delete_user", self.user)
			except subprocess.CalledProcessError:
				pass

	# --- processes ----------------------------------------------------------------------------------

	def _rotated(self, index: int) -> str:
		"""The node list starting at node ``index`` (mod 3): each process prefers another node."""
		shift = index % len(self.node_urls)
		return ",".join(self.node_urls[shift:] + self.node_urls[:shift])

	def start_one(self, index: int, wait: bool = True, **fault_env: str) -> subprocess.Popen[bytes]:
		log = self.workdir / f"worker-{index}-{len(self.logs)}.log"
		self.logs.append(log)
		env = {
			**os.environ,
			"PYTHONPATH": str(REPO),
			"EDA_FAULT_AMQP": self._rotated(index),
			"EDA_FAULT_STORE": self.store_url,
			"EDA_FAULT_QUEUE": self.queue,
			"EDA_FAULT_EXCHANGE": self.exchange,
			"EDA_FAULT_MARKERS": str(self.markers),
			"EDA_FAULT_QUEUE_TYPE": "quorum",
			"EDA_FAULT_CLIENT_NAME": self.client_name(index),
			"EDA_FAULT_HANDLER_SECONDS": "0.002",
			**fault_env,
		}
		with log.open("wb") as out:
			process = subprocess.Popen(
				[sys.executable, "-m", "tests.faults.worker_main"],
				env=env,
				stdout=out,
				stderr=subprocess.STDOUT,
				cwd=REPO,
			)
		self.workers[index] = process
		if wait:
			self.wait_for(lambda: self._consumers() >= len(self.workers), 60, f"worker {index} to consume")
		return process

	def stop_one(self, index: int, sig: int = signal.SIGTERM) -> None:
		process = self.workers.pop(index, None)
		if process is None or process.poll() is not None:
			return
		process.send_signal(sig)
		try:
			process.wait(timeout=60)
		except subprocess.TimeoutExpired:
			process.kill()
			process.wait()

	def client_name(self, index: int) -> str:
		return f"{self.prefix}-worker-{index}"

	def start_producers(self, count: int, producers: int = 2, pause: float = 0.02) -> None:
		for index in range(producers):
			ids = self.workdir / f"producer-{index}.ids"
			log = self.workdir / f"producer-{index}.log"
			self.logs.append(log)
			env = {
				**os.environ,
				"PYTHONPATH": str(REPO),
				"EDA_FAULT_AMQP": self._rotated(index + 1),
				"EDA_FAULT_EXCHANGE": self.exchange,
				"EDA_FAULT_COUNT": str(count),
				"EDA_FAULT_TAG": f"p{index}",
				"EDA_FAULT_IDS": str(ids),
				"EDA_FAULT_CLIENT_NAME": f"{self.prefix}-producer-{index}",
				"EDA_FAULT_PAUSE": str(pause),
				"EDA_FAULT_STORE": self.store_url,
			}
			with log.open("wb") as out:
				process = subprocess.Popen(
					[sys.executable, "-m", "tests.faults.producer_main"],
					env=env,
					stdout=out,
					stderr=subprocess.STDOUT,
					cwd=REPO,
				)
			self.producers.append((process, ids))

	def start_publisher(self, module: str, name: str, urls: list[str], **settings: str) -> None:
		"""One producing process of ``module`` (``tests.faults.steady_producer_main``,
		``tests.faults.outbox_main``) on the node list ``urls``, with the lab's exchange and store;
		``settings`` are its EDA_FAULT_* variables without the prefix."""
		ids = self.workdir / f"{name}.ids"
		log = self.workdir / f"{name}.log"
		self.logs.append(log)
		env = {
			**os.environ,
			"PYTHONPATH": str(REPO),
			"EDA_FAULT_AMQP": ",".join(urls),
			"EDA_FAULT_STORE": self.store_url,
			"EDA_FAULT_EXCHANGE": self.exchange,
			"EDA_FAULT_IDS": str(ids),
			"EDA_FAULT_CLIENT_NAME": f"{self.prefix}-{name}",
			"EDA_FAULT_TAG": name,
			**{f"EDA_FAULT_{key}": value for key, value in settings.items()},
		}
		with log.open("wb") as out:
			process = subprocess.Popen(
				[sys.executable, "-m", module], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
			)
		self.producers.append((process, ids))

	def producer_summaries(self) -> list[dict]:
		"""The JSON line each producing process printed last."""
		found = []
		for _process, ids in self.producers:
			log = ids.with_suffix(".log")
			lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
			if lines and lines[-1].startswith("{"):
				found.append(json.loads(lines[-1]))
		return found

	def refused_ids(self, ids: set[str]) -> set[str]:
		"""Which of ``ids`` the producers' store holds FAILED: refused by the broker, sent by nobody."""
		store = open_store(self.store_url)
		try:
			query = MessageFilter(direction=Direction.OUTGOING, statuses=(Status.FAILED,), limit=10**7)
			return {r.message_id for r in store.find(query)} & ids
		finally:
			store.close()

	def account(self, outcome: Outcome, ids: set[str]) -> Outcome:
		"""Refused (FAILED) messages are not lost, they are counted as refused; the longest stall."""
		refused = self.refused_ids(ids)
		outcome.refused = len(refused)
		outcome.lost -= len(refused - self._finished(ids))
		stalls = [s["longest_stall"] for s in self.producer_summaries() if "longest_stall" in s]
		outcome.longest_stall = max(stalls) if stalls else None
		return outcome

	def _finished(self, ids: set[str]) -> set[str]:
		processed, dead = self.finished_ids()
		return ids & (processed | dead)

	def wait_for_producers(self, timeout: float = 600) -> set[str]:
		ids: set[str] = set()
		for process, path in self.producers:
			assert process.wait(timeout=timeout) == 0, f"a producer failed; see {self.logs}"
			ids |= set(path.read_text().split())
		return ids

	def producer_resends(self) -> int:
		"""Publishes interrupted before their confirms came (the publisher reconnected and resent the
		unconfirmed ones), plus chunks the producer itself resent after giving up on a connection."""
		total = 0
		for log in self.logs:
			if "producer" in log.name and log.exists():
				text = log.read_text(errors="replace")
				total += text.count("reconnecting to resend") + text.count("resending it")
		return total

	def _consumers(self) -> int:
		for url in self.node_urls:
			try:
				connection = pika.BlockingConnection(BrokerSettings(url=url).parameters())
			except pika.exceptions.AMQPConnectionError:
				continue
			try:
				return int(connection.channel().queue_declare(self.queue, passive=True).method.consumer_count)
			except pika.exceptions.ChannelClosedByBroker:
				return 0
			finally:
				if connection.is_open:
					connection.close()
		return 0

	def _queue_exists(self) -> bool:
		return self._consumers() > 0

	def effects_count(self) -> int:
		return sum(self.effects().values())

	def when_effects_reach(self, count: int, timeout: float = 300) -> None:
		self.wait_for(lambda: self.effects_count() >= count, timeout, f"{count} side effects")


@contextmanager
def cluster_lab(cluster: RabbitCluster, workdir: Path) -> Iterator[ClusterLab]:
	with mariadb_store(workdir) as (store_url, _user):
		lab = ClusterLab(workdir, cluster, store_url)
		try:
			yield lab
		finally:
			lab.close()
			heal(cluster)


def heal(cluster: RabbitCluster) -> None:
	"""Every node running again, so the next scenario starts from a whole cluster."""
	for node in cluster.nodes:
		if node.process is None or node.process.poll() is not None:
			cluster.start_node(node)


def _run(
	lab: ClusterLab,
	scenario: str,
	count: int,
	fault: Callable[[ClusterLab], float],
	workers: int = 3,
	at: float = 0.3,
	when: Callable[[ClusterLab], bool] | None = None,
	producer_pause: float = 0.02,
) -> Outcome:
	"""Start ``workers`` workers and two producers of ``count`` messages each; once ``at`` of the
	messages are processed, run ``fault`` (which returns the moment the fault began); settle and
	reconcile, the recovery being the time from that moment to the next side effect."""
	for index in range(workers):
		lab.start_one(index)
	lab.start_producers(count, pause=producer_pause)
	total = 2 * count
	if when is None:
		lab.when_effects_reach(int(total * at))
	else:
		lab.wait_for(lambda: when(lab), 120, "the moment of the fault")
	before = lab.effects_count()
	moment = fault(lab)
	recovery = lab.first_effect_after(moment, before) if before < total else None
	ids = lab.wait_for_producers()
	assert len(ids) == total
	lab.settle(ids - lab.refused_ids(ids), timeout=600)
	for index in list(lab.workers):
		lab.stop_one(index)
	outcome = lab.account(lab.reconcile(scenario, ids, recovery), ids)
	if outcome.longest_stall is not None:
		outcome.notes.append(f"longest publish_many call {outcome.longest_stall:.2f}s")
	resends = lab.producer_resends()
	if resends:
		outcome.notes.append(f"{resends} publishes interrupted before their confirm, resent")
	return outcome


def _seconds_until(condition: Callable[[], bool], moment: float, timeout: float = 120) -> float | None:
	"""Seconds from ``moment`` until ``condition`` holds (None if it never does within ``timeout``)."""
	deadline = time.monotonic() + timeout
	while time.monotonic() < deadline:
		try:
			if condition():
				return time.monotonic() - moment
		except (LookupError, subprocess.CalledProcessError):
			pass
		time.sleep(0.2)
	return None


def leader_killed(cluster: RabbitCluster, workdir: Path, count: int) -> Outcome:
	with cluster_lab(cluster, workdir) as lab:

		def kill_leader(lab: ClusterLab) -> float:
			leader = cluster.leader(lab.queue, lab.vhost)
			moment = time.monotonic()
			cluster.kill_node(leader)
			lab.killed = leader  # type: ignore[attr-defined]
			lab.elected = _seconds_until(  # type: ignore[attr-defined]
				lambda: cluster.leader(lab.queue, lab.vhost) is not leader, moment
			)
			return moment

		outcome = _run(lab, "cluster: SIGKILL of the queue leader's node, mid-stream", count, kill_leader)
		killed: Node = lab.killed  # type: ignore[attr-defined]
		outcome.notes.append(f"killed {killed.name.split('@')[0]} (the leader)")
		elected: float | None = lab.elected  # type: ignore[attr-defined]
		if elected is not None:
			outcome.notes.append(f"a new leader within {elected:.1f}s (polled with rabbitmqctl)")
		return outcome


def worker_node_killed(cluster: RabbitCluster, workdir: Path, count: int) -> Outcome:
	with cluster_lab(cluster, workdir) as lab:

		def kill_worker_node(lab: ClusterLab) -> float:
			nodes = cluster.connection_nodes(lab.client_name(0))
			assert nodes, "worker 0 has no connection on any node"
			moment = time.monotonic()
			cluster.kill_node(nodes[0])
			lab.killed = nodes[0]  # type: ignore[attr-defined]
			lab.moved = _seconds_until(  # type: ignore[attr-defined]
				lambda: any(n is not nodes[0] for n in cluster.connection_nodes(lab.client_name(0))), moment
			)
			return moment

		outcome = _run(lab, "cluster: SIGKILL of the node a worker is connected to", count, kill_worker_node)
		killed: Node = lab.killed  # type: ignore[attr-defined]
		outcome.notes.append(f"killed {killed.name.split('@')[0]}, worker 0's node")
		moved: float | None = lab.moved  # type: ignore[attr-defined]
		if moved is not None:
			outcome.notes.append(
				f"worker 0 connected to another node within {moved:.1f}s (polled with rabbitmqctl)"
			)
		return outcome


def node_stopped_and_started(cluster: RabbitCluster, workdir: Path, count: int) -> Outcome:
	with cluster_lab(cluster, workdir) as lab:
		back: dict[str, float] = {}

		def stop_start(lab: ClusterLab) -> float:
			node = cluster.nodes[1]
			moment = time.monotonic()

			def cycle() -> None:
				cluster.stop_node(node)
				time.sleep(3)
				cluster.start_node(node)
				back["seconds"] = time.monotonic() - moment

			lab.cycle = in_background(cycle)  # type: ignore[attr-defined]
			return moment

		outcome = _run(
			lab, "cluster: a node stopped, then started, while the others carry on", count, stop_start
		)
		lab.cycle.join(timeout=300)  # type: ignore[attr-defined]
		outcome.notes.append(f"node 2 stopped and back in {back.get('seconds', float('nan')):.1f}s")
		return outcome


def rolling_restart(cluster: RabbitCluster, workdir: Path, count: int) -> Outcome:
	with cluster_lab(cluster, workdir) as lab:
		took: dict[str, float] = {}

		def roll(lab: ClusterLab) -> float:
			moment = time.monotonic()

			def restart_each() -> None:
				for node in cluster.nodes:
					# A node goes only when its quorum members elsewhere are in sync (as an operator does).
					lab.wait_for(lambda n=node: _safe_to_stop(cluster, n), 180, f"{node.name} safe to stop")
					cluster.stop_node(node)
					cluster.start_node(node)
				took["seconds"] = time.monotonic() - moment

			lab.roll = in_background(restart_each)  # type: ignore[attr-defined]
			return moment

		outcome = _run(lab, "cluster: rolling restart of all three nodes", count, roll, at=0.1)
		lab.roll.join(timeout=600)  # type: ignore[attr-defined]
		assert "seconds" in took, "the rolling restart did not finish"
		outcome.notes.append(f"restart of the 3 nodes took {took['seconds']:.1f}s")
		return outcome


def _safe_to_stop(cluster: RabbitCluster, node: Node) -> bool:
	try:
		cluster.queues_tool(node, "check_if_node_is_quorum_critical", timeout=60)
		return True
	except subprocess.CalledProcessError:
		return False


def workers_killed(cluster: RabbitCluster, workdir: Path, count: int) -> Outcome:
	kills = ((0, 0.3), (1, 0.45), (2, 0.6), (0, 0.75))
	with cluster_lab(cluster, workdir) as lab:

		def kill_workers(lab: ClusterLab) -> float:
			moment = time.monotonic()

			def kill_and_restart() -> None:
				for index, share in kills:
					lab.when_effects_reach(int(2 * count * share))
					process = lab.workers[index]
					process.send_signal(signal.SIGKILL)
					process.wait()
					lab.start_one(index, wait=False)

			lab.killer = in_background(kill_and_restart)  # type: ignore[attr-defined]
			return moment

		outcome = _run(
			lab,
			"cluster: 3 workers on one queue, SIGKILLed and restarted during the drain",
			count,
			kill_workers,
		)
		lab.killer.join(timeout=300)  # type: ignore[attr-defined]
		outcome.notes.append(f"{len(kills)} worker SIGKILLs (at 30/45/60/75% processed), each restarted")
		return outcome


def producer_node_lost(cluster: RabbitCluster, workdir: Path, count: int) -> Outcome:
	with cluster_lab(cluster, workdir) as lab:
		# Producer 0's list starts with node 2 (``_rotated``): it publishes there while that node lives.
		node = cluster.nodes[1]

		def kill_producer_node(lab: ClusterLab) -> float:
			moment = time.monotonic()
			cluster.kill_node(node)
			return moment

		outcome = _run(
			lab,
			"cluster: a producer's node lost between publish and confirm",
			count,
			kill_producer_node,
			# Once producer 0 has sent its first chunks: it is then publishing, with confirms in flight.
			when=lambda lab: (lab.workdir / "producer-0.ids").exists() and lab.effects_count() > 0,
			producer_pause=0.05,
		)
		outcome.notes.append(f"killed {node.name.split('@')[0]}, producer 0's node")
		return outcome


# The operator: the leader's node comes back this long after its SIGKILL.
RESTART_AFTER = 10.0
# One message per call at the rate of a busy web service.
STEADY_RATE = 150


def _leader_lost_while_publishing(
	cluster: RabbitCluster,
	workdir: Path,
	scenario: str,
	start: Callable[[ClusterLab, list[str]], int],
) -> Outcome:
	"""Two workers on the queue; ``start(lab, urls)`` starts the producing processes on a node list that
	begins at the queue leader's node (so they are connected to it, as in issue #26) and returns how many
	messages they send. Once a third is processed the leader's node is SIGKILLed; it is started again
	``RESTART_AFTER`` seconds later. Each message must be processed once, and none left FAILED."""
	with cluster_lab(cluster, workdir) as lab:
		for index in range(2):
			lab.start_one(index)
		leader = cluster.leader(lab.queue, lab.vhost)
		first = cluster.nodes.index(leader)
		expected = start(lab, lab.node_urls[first:] + lab.node_urls[:first])
		lab.when_effects_reach(expected // 3)
		before = lab.effects_count()
		moment = time.monotonic()
		cluster.kill_node(leader)
		restarting = cluster.start_later(leader, moment, RESTART_AFTER)
		elected = _seconds_until(lambda: cluster.leader(lab.queue, lab.vhost) is not leader, moment)
		recovery = lab.first_effect_after(moment, before) if before < expected else None
		ids = lab.wait_for_producers()
		restarting.join(timeout=300)
		assert len(ids) == expected and restarting.seconds is not None, (
			"a producer or the restart did not finish"
		)
		lab.settle(ids - lab.refused_ids(ids), timeout=600)
		for index in list(lab.workers):
			lab.stop_one(index)
		outcome = lab.account(lab.reconcile(scenario, ids, recovery), ids)
		outcome.notes.append(
			f"killed {leader.name.split('@')[0]} (the leader, the producers' node), back after "
			f"{restarting.seconds:.1f}s"
		)
		if elected is not None:
			outcome.notes.append(f"a new leader within {elected:.1f}s")
		if outcome.longest_stall is not None:
			outcome.notes.append(f"longest stall a publisher saw {outcome.longest_stall:.2f}s")
		return outcome


def leader_lost_under_steady_publish(cluster: RabbitCluster, workdir: Path, count: int) -> Outcome:
	"""Issue #26 as reported: a service calling ``publish()`` once per message at 150/s (and a second one
	with ``publish(wait=False)``), each with the SQL store, while the queue leader's node is lost."""

	def start(lab: ClusterLab, urls: list[str]) -> int:
		for name, wait in (("steady-wait", "1"), ("steady-nowait", "0")):
			lab.start_publisher(
				"tests.faults.steady_producer_main",
				name,
				urls,
				COUNT=str(count),
				RATE=str(STEADY_RATE),
				WAIT=wait,
			)
		return 2 * count

	return _leader_lost_while_publishing(
		cluster,
		workdir,
		"cluster: leader's node SIGKILLed while services publish one at a time (publish(), wait=True and "
		"False), restarted 10 s later",
		start,
	)


def leader_lost_under_outbox_relay(cluster: RabbitCluster, workdir: Path, count: int) -> Outcome:
	"""The outbox pattern on the SQL store: each message written PENDING in a commit of its own, and the
	core relay (``OutboxRelay``, which the Frappe relay wraps) draining after each commit, while the
	queue leader's node is lost. A message refused past the publisher's bound would be FAILED with
	``StillNacked`` and put back in line by the relay after 5 s (the process waits for that)."""

	def start(lab: ClusterLab, urls: list[str]) -> int:
		lab.start_publisher(
			"tests.faults.outbox_main",
			"outbox",
			urls,
			COUNT=str(count),
			RATE=str(STEADY_RATE),
			RETRY_REFUSED_AFTER="5",
		)
		return count

	outcome = _leader_lost_while_publishing(
		cluster,
		workdir,
		"cluster: leader's node SIGKILLed while the outbox relay (SQL store) sends, restarted 10 s later",
		start,
	)
	return outcome


SCENARIOS: tuple[tuple[str, Callable[[RabbitCluster, Path, int], Outcome]], ...] = (
	("cluster_leader_killed", leader_killed),
	("cluster_worker_node_killed", worker_node_killed),
	("cluster_node_stop_start", node_stopped_and_started),
	("cluster_rolling_restart", rolling_restart),
	("cluster_workers_killed", workers_killed),
	("cluster_producer_node_lost", producer_node_lost),
	("cluster_leader_lost_steady_publish", leader_lost_under_steady_publish),
	("cluster_leader_lost_outbox_relay", leader_lost_under_outbox_relay),
)
