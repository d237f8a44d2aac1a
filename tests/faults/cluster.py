"""A throw-away three-node RabbitMQ cluster beside the system broker, for the cluster fault scenarios.

The nodes are ordinary ``rabbitmq-server`` processes with names, AMQP and distribution ports, data and
log folders of their own under one temporary folder, and an Erlang cookie of their own (so nothing
here can reach or be reached by the system node on 5672). Started as the ``rabbitmq`` user when the
suite runs as root (the server refuses nothing as root, but its files must not end up root-owned in a
folder the system node's user might later read), as the current user otherwise. ``close()`` stops
every node it started and removes the folder.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SBIN_CANDIDATES = (
	"/usr/lib/rabbitmq/bin",  # Debian and Ubuntu packages (the real scripts, not the /usr/sbin wrappers)
	"/opt/rabbitmq/sbin",  # the generic unix tarball
	"/usr/local/sbin",  # Homebrew
)


class ClusterUnavailable(RuntimeError):
	"""The cluster could not be started here (no RabbitMQ server scripts, or a node did not boot)."""


def _sbin() -> Path:
	configured = os.environ.get("EDA_TEST_RABBITMQ_SBIN")
	for folder in ([configured] if configured else []) + list(SBIN_CANDIDATES):
		if folder and (Path(folder) / "rabbitmq-server").exists() and (Path(folder) / "rabbitmqctl").exists():
			return Path(folder)
	# /usr/sbin/rabbitmq-server on Debian is a wrapper that logs into the system node's folder: never it.
	raise ClusterUnavailable(
		f"no rabbitmq-server scripts in {SBIN_CANDIDATES}; set EDA_TEST_RABBITMQ_SBIN to their folder"
	)


def free_port() -> int:
	with socket.socket() as probe:
		probe.bind(("127.0.0.1", 0))
		return int(probe.getsockname()[1])


@dataclass
class Node:
	index: int
	name: str
	amqp_port: int
	dist_port: int
	folder: Path
	process: subprocess.Popen[bytes] | None = None

	@property
	def pid_file(self) -> Path:
		return self.folder / "mnesia" / f"{self.name}.pid"


@dataclass
class NodeRestart:
	"""A node being started again in the background (``RabbitCluster.start_later``)."""

	since: float
	seconds: float | None = None  # how long after ``since`` the node was up again; None until it is
	thread: threading.Thread | None = None

	def join(self, timeout: float) -> None:
		if self.thread is not None:
			self.thread.join(timeout)


class RabbitCluster:
	"""Three (or ``size``) clustered nodes on free ports of 127.0.0.1, user guest/guest on each."""

	def __init__(self, size: int = 3, base: Path | None = None) -> None:
		self.sbin = _sbin()
		self.tag = uuid.uuid4().hex[:6]
		self.base = base or Path(tempfile.mkdtemp(prefix=f"eda-cluster-{self.tag}-"))
		self.user = _server_user()
		self.nodes: list[Node] = []
		used: set[int] = set()
		for index in range(1, size + 1):
			amqp, dist = _two_free_ports(used)
			self.nodes.append(
				Node(index, f"eda{self.tag}n{index}@localhost", amqp, dist, self.base / f"n{index}")
			)
		self._prepare()

	# --- life cycle -------------------------------------------------------------------------------

	def start(self, timeout: float = 120) -> RabbitCluster:
		"""Boot every node, then join nodes 2.. to node 1; about 20 s for three."""
		try:
			for node in self.nodes:
				self.start_node(node, wait=False)
			for node in self.nodes:
				self.await_node(node, timeout)
			first = self.nodes[0]
			for node in self.nodes[1:]:
				self.ctl(node, "stop_app")
				self.ctl(node, "join_cluster", first.name)
				self.ctl(node, "start_app")
				self.ctl(node, "await_startup")
			running = self.ctl(first, "eval", "length(rabbit_nodes:all_running()).").strip()
			if running != str(len(self.nodes)):
				raise ClusterUnavailable(f"the cluster has {running} running nodes, not {len(self.nodes)}")
		except BaseException:
			self.close()
			raise
		return self

	def start_node(self, node: Node, wait: bool = True, timeout: float = 120) -> None:
		log = (node.folder / "log" / "console.log").open("ab")
		node.process = subprocess.Popen(
			[str(self.sbin / "rabbitmq-server")],
			env=self._env(node),
			cwd=self.base,
			stdout=log,
			stderr=subprocess.STDOUT,
			start_new_session=True,  # a Ctrl-C of the suite must not reach the nodes before close()
			**self._as_server_user(),
		)
		log.close()
		if wait:
			self.await_node(node, timeout)

	def await_node(self, node: Node, timeout: float = 120) -> None:
		deadline = time.monotonic() + timeout
		while time.monotonic() < deadline:
			if node.process is not None and node.process.poll() is not None:
				raise ClusterUnavailable(
					f"node {node.name} exited with {node.process.returncode}; see {node.folder / 'log'}"
				)
			try:
				self.ctl(node, "await_startup", "--timeout", "10", timeout=30)
				return
			except subprocess.CalledProcessError:
				time.sleep(0.5)
		raise ClusterUnavailable(f"node {node.name} did not start in {timeout:.0f}s")

	def kill_node(self, node: Node) -> None:
		"""SIGKILL the node's Erlang VM: no goodbye to its peers or its clients."""
		pid = int(node.pid_file.read_text().strip())
		os.kill(pid, signal.SIGKILL)
		if node.process is not None:
			node.process.wait(timeout=60)
		node.process = None

	def start_later(self, node: Node, since: float, after: float) -> NodeRestart:
		"""Start ``node`` again ``after`` seconds past ``since`` (``time.monotonic()``), in a thread of its
		own, while the caller watches what the outage does (a leader's node killed, back 10 s later)."""
		restart = NodeRestart(since)

		def run() -> None:
			time.sleep(max(0.0, since + after - time.monotonic()))
			self.start_node(node)
			restart.seconds = time.monotonic() - since

		restart.thread = threading.Thread(target=run, daemon=True)
		restart.thread.start()
		return restart

	def stop_node(self, node: Node) -> None:
		"""A clean shutdown of one node (what a rolling restart or maintenance does)."""
		self.ctl(node, "stop", timeout=120)
		if node.process is not None:
			node.process.wait(timeout=60)
		node.process = None

	def close(self) -> None:
		for node in self.nodes:
			if node.process is None or node.process.poll() is not None:
				continue
			try:
				self.ctl(node, "stop", timeout=60)
			except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
				pass
			try:
				node.process.wait(timeout=30)
			except subprocess.TimeoutExpired:
				if node.pid_file.exists():
					try:
						os.kill(int(node.pid_file.read_text().strip()), signal.SIGKILL)
					except (ProcessLookupError, ValueError):
						pass
				node.process.kill()
				node.process.wait(timeout=30)
			node.process = None
		shutil.rmtree(self.base, ignore_errors=True)

	def __enter__(self) -> RabbitCluster:
		return self.start()

	def __exit__(self, *exc: object) -> None:
		self.close()

	# --- operating it ---------------------------------------------------------------------------

	def ctl(self, node: Node, *args: str, timeout: float = 120) -> str:
		return self._tool("rabbitmqctl", node, *args, timeout=timeout)

	def queues_tool(self, node: Node, *args: str, timeout: float = 120) -> str:
		return self._tool("rabbitmq-queues", node, *args, timeout=timeout)

	def urls(self, vhost: str = "/", user: str = "guest", password: str = "guest") -> list[str]:
		path = quote(vhost, safe="")
		return [
			f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{n.amqp_port}/{path}"
			for n in self.nodes
		]

	def running(self) -> list[Node]:
		return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

	def node_named(self, name: str) -> Node:
		for node in self.nodes:
			if node.name == name:
				return node
		raise KeyError(name)

	def node_on_port(self, port: int) -> Node:
		for node in self.nodes:
			if node.amqp_port == port:
				return node
		raise KeyError(port)

	def leader(self, queue: str, vhost: str = "/") -> Node:
		"""The node that leads quorum queue ``queue`` now (asked of any running node)."""
		for asked in self.running():
			try:
				out = self.ctl(asked, "list_queues", "-p", vhost, "name", "leader", "--no-table-headers")
			except subprocess.CalledProcessError:
				continue
			for line in out.splitlines():
				parts = line.split()
				if len(parts) == 2 and parts[0] == queue:
					return self.node_named(parts[1])
		raise LookupError(f"no running node knows a leader for {queue!r}")

	def connection_nodes(self, client_name: str) -> list[Node]:
		"""The nodes that hold a connection named ``client_name`` now (by the server port it reached)."""
		for asked in self.running():
			try:
				out = self.ctl(asked, "list_connections", "port", "client_properties", "--no-table-headers")
			except subprocess.CalledProcessError:
				continue
			found = []
			for line in out.splitlines():
				port, _, properties = line.partition("\t")
				if f'{{"connection_name","{client_name}"}}' in properties and port.strip().isdigit():
					found.append(self.node_on_port(int(port)))
			return found
		return []

	def add_vhost(self, vhost: str) -> None:
		first = self.running()[0]
		self.ctl(first, "add_vhost", vhost)
		self.ctl(first, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

	def add_user(self, user: str, password: str, vhost: str) -> None:
		first = self.running()[0]
		self.ctl(first, "add_user", user, password)
		self.ctl(first, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")

	# --- inside -----------------------------------------------------------------------------------

	def _tool(self, tool: str, node: Node, *args: str, timeout: float) -> str:
		return subprocess.run(
			[str(self.sbin / tool), "-q", "-n", node.name, *args],
			env=self._env(node),
			cwd=self.base,
			check=True,
			capture_output=True,
			text=True,
			timeout=timeout,
			**self._as_server_user(),
		).stdout

	def _prepare(self) -> None:
		cookie = self.base / ".erlang.cookie"
		cookie.write_text(secrets.token_hex(16).upper())
		cookie.chmod(0o400)
		for node in self.nodes:
			for sub in ("mnesia", "log"):
				(node.folder / sub).mkdir(parents=True, exist_ok=True)
			(node.folder / "rabbitmq.conf").write_text(
				f"listeners.tcp.local = 127.0.0.1:{node.amqp_port}\n"
				"log.console = false\n"
				"log.file.level = info\n"
				# Our faults stop nodes; the survivors must keep serving whatever the others do.
				"cluster_partition_handling = pause_minority\n"
			)
			(node.folder / "enabled_plugins").write_text("[].\n")
			(node.folder / "rabbitmq-env.conf").write_text("")  # never the system node's NODENAME
		if self.user is not None:
			uid, gid = self.user.pw_uid, self.user.pw_gid
			for root, dirs, files in os.walk(self.base):
				os.chown(root, uid, gid)
				for entry in dirs + files:
					os.chown(os.path.join(root, entry), uid, gid)

	def _env(self, node: Node) -> dict[str, str]:
		keep = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
		return {
			**keep,
			"HOME": str(self.base),  # the cookie of this cluster, for nodes and CLI tools alike
			"RABBITMQ_CONF_ENV_FILE": str(node.folder / "rabbitmq-env.conf"),
			"RABBITMQ_NODENAME": node.name,
			"RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
			"RABBITMQ_NODE_PORT": str(node.amqp_port),
			"RABBITMQ_DIST_PORT": str(node.dist_port),
			"RABBITMQ_CONFIG_FILE": str(node.folder / "rabbitmq.conf"),
			"RABBITMQ_ENABLED_PLUGINS_FILE": str(node.folder / "enabled_plugins"),
			"RABBITMQ_MNESIA_BASE": str(node.folder / "mnesia"),
			"RABBITMQ_LOG_BASE": str(node.folder / "log"),
			"RABBITMQ_PID_FILE": str(node.pid_file),
			"ERL_EPMD_ADDRESS": "127.0.0.1",
			"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
			"LANG": os.environ.get("LANG", "C.UTF-8"),
		}

	def _as_server_user(self) -> dict[str, object]:
		if self.user is None:
			return {}
		return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}


def _server_user() -> pwd.struct_passwd | None:
	"""The ``rabbitmq`` account when we are root (the packaged server's own user), else nobody else."""
	if os.geteuid() != 0:
		return None
	try:
		return pwd.getpwnam("rabbitmq")
	except KeyError:
		return None


def _two_free_ports(used: set[int]) -> tuple[int, int]:
	ports: list[int] = []
	while len(ports) < 2:
		port = free_port()
		# Not in the CLI tools' distribution range (25672 + 10000 .. + 10) nor the system node's ports.
		if port in used or 35672 <= port <= 35682 or port in (5672, 25672, 4369):
			continue
		used.add(port)
		ports.append(port)
	return ports[0], ports[1]


def node_names(nodes: Sequence[Node]) -> str:
	return ", ".join(n.name.split("@")[0] for n in nodes)
