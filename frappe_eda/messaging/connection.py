"""The process's one broker connection, owned by one thread.

pika connections are not thread-safe: two threads sharing one interleave frames and corrupt the
stream without an error. So ``BrokerConnection`` remembers the thread (and process) that created it
and raises ``WrongThreadError`` from any other; a second open connection in one process raises
``ConnectionAlreadyOpen`` (publisher and worker share one). pika does not reconnect by itself:
``open()`` and ``reconnect()`` retry with exponential back-off (tenacity).

A RabbitMQ cluster is several addresses (``BrokerSettings.nodes``, or a list in ``url``). Each try of
the back-off goes round all of them, starting after the node last connected to: that node is the
likeliest to be the one that just died, and any node of a cluster serves every queue.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from frappe_eda.messaging.errors import (
	BrokerUnavailable,
	ConfigurationError,
	ConnectionAlreadyOpen,
	WrongThreadError,
)

log = logging.getLogger(__name__)

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

# What a dropped connection or closed channel looks like to pika callers.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
	pika.exceptions.AMQPConnectionError,
	pika.exceptions.ConnectionClosed,
	pika.exceptions.StreamLostError,
	pika.exceptions.ChannelWrongStateError,
	pika.exceptions.ConnectionWrongStateError,
	pika.exceptions.ChannelClosed,
)


@dataclass(frozen=True)
class TlsOptions:
	"""Certificates for ``amqps://`` brokers (Amazon MQ, CloudAMQP need at least server verification)."""

	ca_file: str | None = None
	cert_file: str | None = None
	key_file: str | None = None
	server_hostname: str | None = None
	verify: bool = True

	def context(self) -> ssl.SSLContext:
		context = ssl.create_default_context(cafile=self.ca_file)
		if not self.verify:
			context.check_hostname = False
			context.verify_mode = ssl.CERT_NONE
		if self.cert_file:
			context.load_cert_chain(self.cert_file, self.key_file)
		return context


@dataclass(frozen=True)
class BrokerSettings:
	"""Where the broker is and how patient to be with it. ``repr`` and logs never show the password.

	``nodes`` are the other nodes of a cluster: full ``amqp://`` URLs, or ``host`` / ``host:port``
	entries that take the scheme, user, password and vhost of ``url`` (and its port when they name
	none). ``url`` may itself be a list, separated by commas or whitespace (as an environment variable
	or a site config value carries it); a password in such a list has its commas percent-encoded
	(``%2C``), as ``from_parts`` does. A single endpoint (Amazon MQ's cluster deployments and
	CloudAMQP put a load balancer in front of the nodes) is just ``url``.
	"""

	url: str = DEFAULT_URL
	heartbeat: int = 30
	blocked_connection_timeout: float = 60.0
	reconnect_attempts: int = 10
	reconnect_max_wait: float = 30.0
	tls: TlsOptions | None = None
	client_name: str = "frappe_eda"
	socket_timeout: float = 10.0
	nodes: tuple[str, ...] = ()

	def __post_init__(self) -> None:
		listed = split_addresses(self.url)
		if not listed:
			raise ConfigurationError("the broker URL is empty")
		first = listed[0]
		_check_scheme(first)
		extra = split_addresses(self.nodes) if isinstance(self.nodes, str) else list(self.nodes)
		addresses: list[str] = [first]
		for entry in listed[1:] + [e.strip() for e in extra if e and e.strip()]:
			address = _node_url(first, entry)
			if address not in addresses:
				addresses.append(address)
		# Frozen, but normalised once here: every other method sees full URLs only.
		object.__setattr__(self, "url", first)
		object.__setattr__(self, "nodes", tuple(addresses[1:]))

	@classmethod
	def from_parts(
		cls,
		host: str = "127.0.0.1",
		port: int | None = None,
		vhost: str = "/",
		user: str = "guest",
		password: str = "guest",
		tls: TlsOptions | None = None,
		**options: Any,
	) -> BrokerSettings:
		"""``host`` may list several nodes (``mq1, mq2:5673``); each without a port gets ``port``."""
		scheme = "amqps" if tls else "amqp"
		port = port or (5671 if tls else 5672)
		hosts = split_addresses(host) or ["127.0.0.1"]
		userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
		path = "/" + quote(vhost, safe="")
		url = urlunsplit((scheme, f"{userinfo}@{_with_port(hosts[0], port)}", path, "", ""))
		nodes = tuple(options.pop("nodes", ())) + tuple(_with_port(h, port) for h in hosts[1:])
		return cls(url=url, tls=tls, nodes=nodes, **options)

	def __repr__(self) -> str:
		hosts = f", nodes={tuple(_host_port(n) for n in self.nodes)!r}" if self.nodes else ""
		return f"BrokerSettings(url={self.redacted_url()!r}{hosts}, heartbeat={self.heartbeat})"

	__str__ = __repr__

	@property
	def addresses(self) -> tuple[str, ...]:
		"""Every node's URL, ``url`` first."""
		return (self.url, *self.nodes)

	@property
	def user(self) -> str:
		"""The broker user of ``url`` (pika's default, guest, when the URL names none): the ``user_id``
		every publish carries and the broker checks, and the user a consumer knows its own copies by."""
		name = urlsplit(self.url).username
		return unquote(name) if name else "guest"

	@property
	def vhost(self) -> str:
		path = urlsplit(self.url).path
		return unquote(path[1:]) if len(path) > 1 else "/"

	def redacted_url(self, address: str | None = None) -> str:
		"""``address`` (by default ``url``) with its password masked."""
		return _redact(self.url if address is None else address)

	def redacted_addresses(self) -> str:
		return ", ".join(_redact(a) for a in self.addresses)

	def with_user(self, user: str, password: str) -> BrokerSettings:
		"""The same nodes and vhost, logged in as ``user`` (a server's own broker user)."""
		userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
		moved = [
			urlunsplit(urlsplit(a)._replace(netloc=f"{userinfo}@{_host_port(a)}")) for a in self.addresses
		]
		return replace(self, url=moved[0], nodes=tuple(moved[1:]))

	def with_vhost(self, vhost: str) -> BrokerSettings:
		path = "/" + quote(vhost, safe="")
		moved = [urlunsplit(urlsplit(a)._replace(path=path)) for a in self.addresses]
		return replace(self, url=moved[0], nodes=tuple(moved[1:]))

	def parameters(self, address: str | None = None) -> pika.URLParameters:
		"""pika's parameters for ``address`` (by default ``url``), with our timeouts and TLS."""
		params = pika.URLParameters(address or self.url)
		params.heartbeat = self.heartbeat
		params.blocked_connection_timeout = self.blocked_connection_timeout
		params.socket_timeout = self.socket_timeout
		params.connection_attempts = 1  # we retry ourselves, with back-off and a clear final error
		params.client_properties = {"connection_name": self.client_name}
		if self.tls is not None or urlsplit(address or self.url).scheme == "amqps":
			tls = self.tls or TlsOptions()
			params.ssl_options = pika.SSLOptions(tls.context(), tls.server_hostname or params.host)
		return params

	def node_parameters(self) -> list[pika.URLParameters]:
		return [self.parameters(address) for address in self.addresses]


def split_addresses(text: str | Sequence[str]) -> list[str]:
	"""Addresses from a comma- or whitespace-separated string, or from a list of strings."""
	if isinstance(text, str):
		return [part for part in re.split(r"[\s,]+", text) if part]
	return [part.strip() for part in text if part and part.strip()]


def _check_scheme(address: str) -> None:
	scheme = urlsplit(address).scheme
	if scheme not in ("amqp", "amqps"):
		raise ConfigurationError(
			f"broker URL must start with amqp:// or amqps://, not {scheme or '(nothing)'}://"
		)


def _node_url(first: str, entry: str) -> str:
	"""A full URL for ``entry``: as given when it is one, else ``first`` with its host and port."""
	base = urlsplit(first)
	if "://" in entry:
		_check_scheme(entry)
		node = urlsplit(entry)
		if node.scheme != base.scheme:
			raise ConfigurationError(
				f"node {_redact(entry)} uses {node.scheme}:// but {_redact(first)} uses {base.scheme}://; "
				"the nodes of one cluster take one scheme (and one set of TLS options)"
			)
		if (node.path or "/") != (base.path or "/"):
			raise ConfigurationError(
				f"node {_redact(entry)} names another vhost than {_redact(first)}; the nodes of one "
				"cluster serve the same vhost"
			)
		return entry
	userinfo = base.netloc.rpartition("@")[0]
	host = _with_port(entry, base.port or (5671 if base.scheme == "amqps" else 5672))
	return urlunsplit(base._replace(netloc=f"{userinfo}@{host}" if userinfo else host))


def _with_port(host: str, port: int) -> str:
	"""``host`` with ``:port`` unless it names one (IPv6 literals in brackets)."""
	host = host.strip()
	if host.startswith("["):
		return host if "]:" in host else f"{host}:{port}"
	if host.count(":") == 1:
		return host
	if host.count(":") > 1:  # a bare IPv6 address
		return f"[{host}]:{port}"
	return f"{host}:{port}"


def _host_port(address: str) -> str:
	return urlsplit(address).netloc.rpartition("@")[2]


def _redact(address: str) -> str:
	parts = urlsplit(address)
	if parts.password is None:
		return address
	netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
	return urlunsplit(parts._replace(netloc=netloc))


class BrokerConnection:
	"""A ``BlockingConnection`` with a thread guard and back-off reconnects. Use as a context manager."""

	_open_per_process: ClassVar[dict[int, BrokerConnection]] = {}
	_registry_lock: ClassVar[threading.Lock] = threading.Lock()

	def __init__(self, settings: BrokerSettings | None = None) -> None:
		self.settings = settings or BrokerSettings()
		self._owner_thread = threading.get_ident()
		self._owner_pid = os.getpid()
		self._connection: BlockingConnection | None = None
		self._on_reconnect: list[Callable[[], None]] = []
		# Index in settings.addresses of the node connected to last; the next round starts after it.
		self._node = -1

	def __enter__(self) -> BrokerConnection:
		self.open()
		return self

	def __exit__(self, *exc: object) -> None:
		self.close()

	@property
	def is_open(self) -> bool:
		return self._connection is not None and self._connection.is_open

	@property
	def node(self) -> str | None:
		"""The node connected to (its URL, password masked), or None when closed."""
		if not self.is_open:
			return None
		return self.settings.redacted_url(self.settings.addresses[self._node])

	@property
	def blocking(self) -> BlockingConnection:
		"""The underlying pika connection, opened if needed; only for the owning thread."""
		self._check_owner()
		if not self.is_open:
			self.open()
		assert self._connection is not None
		return self._connection

	def open(self) -> None:
		self._check_owner()
		if self.is_open:
			return
		self._claim_process_slot()
		try:
			self._connection = self._connect_with_backoff()
		except BaseException:
			self._release_process_slot()
			raise

	def reconnect(self) -> None:
		"""Drop whatever is left of the old connection, connect again, and let owners redeclare."""
		self._check_owner()
		self._close_quietly()
		self.open()
		for callback in list(self._on_reconnect):
			callback()

	def on_reconnect(self, callback: Callable[[], None]) -> None:
		self._on_reconnect.append(callback)

	def channel(self) -> BlockingChannel:
		return self.blocking.channel()

	def process_events(self, time_limit: float = 0) -> None:
		"""Service heartbeats and deliver pending callbacks; call often from the owning thread."""
		self.blocking.process_data_events(time_limit=time_limit)

	def sleep(self, seconds: float) -> None:
		"""Wait while still servicing the connection (``time.sleep`` would starve heartbeats)."""
		self.blocking.sleep(seconds)

	def close(self) -> None:
		self._check_owner()
		self._close_quietly()

	def _close_quietly(self) -> None:
		connection, self._connection = self._connection, None
		self._release_process_slot()
		if connection is not None and connection.is_open:
			try:
				connection.close()
			except CONNECTION_ERRORS:
				pass

	def _connect_with_backoff(self) -> BlockingConnection:
		attempts = max(1, self.settings.reconnect_attempts)
		where = self.settings.redacted_addresses()
		retrying = Retrying(
			stop=stop_after_attempt(attempts),
			wait=wait_exponential(multiplier=0.2, max=self.settings.reconnect_max_wait),
			retry=retry_if_exception_type(pika.exceptions.AMQPConnectionError),
			before_sleep=lambda state: log.warning(
				"broker %s unreachable (try %d of %d), retrying", where, state.attempt_number, attempts
			),
			reraise=False,
		)
		try:
			return retrying(self._connect_to_any)
		except RetryError as e:
			cause = e.last_attempt.exception()
			nodes = "any of " if self.settings.nodes else ""
			raise BrokerUnavailable(
				f"cannot connect to {nodes}{where} after {attempts} tries: "
				f"{type(cause).__name__}: {cause or 'no answer'}"
			) from None

	def _connect_to_any(self) -> BlockingConnection:
		"""One try: each node once, starting after the last one connected to; the last error if none."""
		addresses = self.settings.addresses
		last: pika.exceptions.AMQPConnectionError | None = None
		for step in range(1, len(addresses) + 1):
			index = (self._node + step) % len(addresses)
			try:
				connection = BlockingConnection(self.settings.parameters(addresses[index]))
			except pika.exceptions.AMQPConnectionError as e:
				last = e
				if len(addresses) > 1:
					log.info("node %s unreachable: %s", self.settings.redacted_url(addresses[index]), e)
				continue
			if len(addresses) > 1:
				log.info("connected to node %s", self.settings.redacted_url(addresses[index]))
			self._node = index
			return connection
		assert last is not None
		raise last

	def _check_owner(self) -> None:
		if os.getpid() != self._owner_pid:
			raise WrongThreadError(
				f"this broker connection was created in process {self._owner_pid} and used in "
				f"{os.getpid()}; create the connection after forking"
			)
		if threading.get_ident() != self._owner_thread:
			raise WrongThreadError(
				f"this broker connection belongs to thread {self._owner_thread} and was used from "
				f"{threading.get_ident()} ({threading.current_thread().name}); pika connections are not "
				f"thread-safe: give each thread its own process or hand work to the owning thread"
			)

	def _claim_process_slot(self) -> None:
		pid = os.getpid()
		with self._registry_lock:
			holder = self._open_per_process.get(pid)
			if holder is not None and holder is not self and holder.is_open:
				raise ConnectionAlreadyOpen(
					"this process already has an open broker connection; share it (pass it to the "
					"Publisher and the Worker) instead of opening another"
				)
			self._open_per_process[pid] = self

	def _release_process_slot(self) -> None:
		with self._registry_lock:
			if self._open_per_process.get(os.getpid()) is self:
				del self._open_per_process[os.getpid()]
