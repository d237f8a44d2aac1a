"""The process's one broker connection, owned by one thread.

pika connections are not thread-safe: two threads sharing one interleave frames and corrupt the
stream without an error. So ``BrokerConnection`` remembers the thread (and process) that created it
and raises ``WrongThreadError`` from any other; a second open connection in one process raises
``ConnectionAlreadyOpen`` (publisher and worker share one). pika does not reconnect by itself:
``open()`` and ``reconnect()`` retry with exponential back-off (tenacity).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable
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
	"""Where the broker is and how patient to be with it. ``repr`` and logs never show the password."""

	url: str = DEFAULT_URL
	heartbeat: int = 30
	blocked_connection_timeout: float = 60.0
	reconnect_attempts: int = 10
	reconnect_max_wait: float = 30.0
	tls: TlsOptions | None = None
	client_name: str = "frappe_eda"
	socket_timeout: float = 10.0

	def __post_init__(self) -> None:
		scheme = urlsplit(self.url).scheme
		if scheme not in ("amqp", "amqps"):
			raise ConfigurationError(
				f"broker URL must start with amqp:// or amqps://, not {scheme or '(nothing)'}://"
			)

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
		scheme = "amqps" if tls else "amqp"
		port = port or (5671 if tls else 5672)
		netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}"
		return cls(url=urlunsplit((scheme, netloc, "/" + quote(vhost, safe=""), "", "")), tls=tls, **options)

	def __repr__(self) -> str:
		return f"BrokerSettings(url={self.redacted_url()!r}, heartbeat={self.heartbeat})"

	__str__ = __repr__

	@property
	def vhost(self) -> str:
		path = urlsplit(self.url).path
		return unquote(path[1:]) if len(path) > 1 else "/"

	def redacted_url(self) -> str:
		parts = urlsplit(self.url)
		if parts.password is None:
			return self.url
		netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
		return urlunsplit(parts._replace(netloc=netloc))

	def with_vhost(self, vhost: str) -> BrokerSettings:
		parts = urlsplit(self.url)
		return replace(self, url=urlunsplit(parts._replace(path="/" + quote(vhost, safe=""))))

	def parameters(self) -> pika.URLParameters:
		params = pika.URLParameters(self.url)
		params.heartbeat = self.heartbeat
		params.blocked_connection_timeout = self.blocked_connection_timeout
		params.socket_timeout = self.socket_timeout
		params.connection_attempts = 1  # we retry ourselves, with back-off and a clear final error
		params.client_properties = {"connection_name": self.client_name}
		if self.tls is not None or urlsplit(self.url).scheme == "amqps":
			tls = self.tls or TlsOptions()
			params.ssl_options = pika.SSLOptions(tls.context(), tls.server_hostname or params.host)
		return params


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

	def __enter__(self) -> BrokerConnection:
		self.open()
		return self

	def __exit__(self, *exc: object) -> None:
		self.close()

	@property
	def is_open(self) -> bool:
		return self._connection is not None and self._connection.is_open

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
		params = self.settings.parameters()
		attempts = max(1, self.settings.reconnect_attempts)
		retrying = Retrying(
			stop=stop_after_attempt(attempts),
			wait=wait_exponential(multiplier=0.2, max=self.settings.reconnect_max_wait),
			retry=retry_if_exception_type(pika.exceptions.AMQPConnectionError),
			before_sleep=lambda state: log.warning(
				"broker %s unreachable (try %d of %d), retrying",
				self.settings.redacted_url(),
				state.attempt_number,
				attempts,
			),
			reraise=False,
		)
		try:
			return retrying(BlockingConnection, params)
		except RetryError as e:
			cause = e.last_attempt.exception()
			raise BrokerUnavailable(
				f"cannot connect to {self.settings.redacted_url()} after {attempts} tries: "
				f"{type(cause).__name__}: {cause or 'no answer'}"
			) from None

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
