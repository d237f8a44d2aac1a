"""Telling people that something failed: on dead-letter and on publish failure.

Notices carry ids, routing keys and the error, never the payload (it may hold personal data or
secrets). ``RateLimitedNotifier`` groups identical failures by fingerprint, so a broker outage that
fails ten thousand publishes sends one alert per window saying how many it stood for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from frappe_eda.messaging.envelope import utcnow

log = logging.getLogger(__name__)

DEAD_LETTERED = "dead_letter"
PUBLISH_FAILED = "publish_failed"


@dataclass(frozen=True)
class FailureNotice:
	kind: str
	message_id: str
	routing_key: str
	exception_type: str
	error: str
	fingerprint: str
	queue: str = ""
	handler: str = ""
	attempt: int = 1
	occurred_at: datetime = field(default_factory=utcnow)
	suppressed: int = 0

	def summary(self) -> str:
		where = f"queue {self.queue}" if self.queue else "publish"
		more = f" (+{self.suppressed} more like it)" if self.suppressed else ""
		return f"[{self.kind}] {where}, key {self.routing_key}, message {self.message_id}: {self.exception_type}: {self.error}{more}"


class Notifier(Protocol):
	def notify(self, notice: FailureNotice) -> None: ...


class LoggingNotifier:
	def __init__(self, logger: logging.Logger | None = None) -> None:
		self.logger = logger or logging.getLogger("frappe_eda.failures")

	def notify(self, notice: FailureNotice) -> None:
		self.logger.error(notice.summary())


class SentryNotifier:
	"""Sends notices to Sentry, grouped there by our fingerprint rather than by the stack of this call.

	With a DSN it sends through a client of its own, made once per process (``sentry_client``): the
	host's own Sentry set-up (Frappe's, a service's) stays as it is, and the client sends these notices
	and nothing else. Without a DSN it reports through whatever Sentry the process already set up.
	"""

	def __init__(self, dsn: str | None = None, environment: str | None = None, transport: Any = None) -> None:
		import sentry_sdk

		self._sentry = sentry_sdk
		self._client = sentry_client(dsn, environment, transport) if dsn else None

	def notify(self, notice: FailureNotice) -> None:
		if self._client is not None:
			self._client.capture_event(_sentry_event(notice))
			return
		with (
			self._sentry.new_scope()
			if hasattr(self._sentry, "new_scope")
			else self._sentry.push_scope() as scope
		):
			scope.fingerprint = ["frappe_eda", notice.kind, notice.fingerprint]
			for tag, value in _sentry_tags(notice).items():
				scope.set_tag(tag, value)
			scope.set_extra("message_id", notice.message_id)
			scope.set_extra("suppressed", notice.suppressed)
			self._sentry.capture_message(notice.summary(), level="error")


# What our own Sentry client may send: only the events we build. The default integrations hook logging,
# threads and excepthook, and report frame locals, which hold payloads; request bodies likewise (PII is
# off by default). Accepted as named by sentry-sdk 1.37 and 2.x.
SENTRY_OPTIONS: dict[str, Any] = {
	"default_integrations": False,
	"auto_enabling_integrations": False,
	"include_local_variables": False,
	"include_source_context": False,
	"attach_stacktrace": False,
	"max_request_body_size": "never",
}
_sentry_clients: dict[tuple[str, str | None, Any], Any] = {}
_sentry_lock = threading.Lock()


def sentry_client(dsn: str, environment: str | None = None, transport: Any = None) -> Any:
	"""The process's Sentry client for ``dsn``, made on first use with ``SENTRY_OPTIONS``: building one
	per notifier would start a transport thread each time and is what re-initialising Sentry did."""
	import sentry_sdk

	key = (dsn, environment, transport)
	with _sentry_lock:
		client = _sentry_clients.get(key)
		if client is None:
			options = dict(SENTRY_OPTIONS, environment=environment)
			if transport is not None:
				options["transport"] = transport
			client = _sentry_clients[key] = sentry_sdk.Client(dsn, **options)
	return client


def _sentry_tags(notice: FailureNotice) -> dict[str, str]:
	return {"eda.kind": notice.kind, "eda.queue": notice.queue or "-", "eda.routing_key": notice.routing_key}


def _sentry_event(notice: FailureNotice) -> dict[str, Any]:
	"""The event ``capture_message`` would build, with our grouping; no scope of the host merged in."""
	return {
		"message": notice.summary(),
		"level": "error",
		"logger": "frappe_eda",
		"fingerprint": ["frappe_eda", notice.kind, notice.fingerprint],
		"tags": _sentry_tags(notice),
		"extra": {"message_id": notice.message_id, "suppressed": notice.suppressed},
	}


class FanoutNotifier:
	"""Several notifiers; one that raises does not stop the others or the worker."""

	def __init__(self, notifiers: Iterable[Notifier]) -> None:
		self.notifiers = list(notifiers)

	def notify(self, notice: FailureNotice) -> None:
		for notifier in self.notifiers:
			try:
				notifier.notify(notice)
			except Exception:
				log.exception(
					"notifier %s failed; the failure itself is still recorded", type(notifier).__name__
				)


class RateLimitedNotifier:
	"""Passes the first notice of each (kind, fingerprint) per window; counts the rest into the next."""

	def __init__(
		self, inner: Notifier, window_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic
	):
		self.inner = inner
		self.window = window_seconds
		self.clock = clock
		self._lock = threading.Lock()
		self._groups: dict[tuple[str, str, str], _Group] = {}

	def notify(self, notice: FailureNotice) -> None:
		# Per queue too: bad input has a fingerprint of its error type alone, shared by every queue.
		key = (notice.kind, notice.fingerprint, notice.queue)
		now = self.clock()
		with self._lock:
			group = self._groups.get(key)
			if group is not None and now - group.sent_at < self.window:
				group.suppressed += 1
				group.last = notice
				return
			suppressed = group.suppressed if group else 0
			self._groups[key] = _Group(sent_at=now)
		self.inner.notify(replace(notice, suppressed=suppressed) if suppressed else notice)

	def flush(self) -> None:
		"""Send one notice per group that still holds suppressed failures (e.g. at worker shutdown)."""
		with self._lock:
			pending = [(g.suppressed, g.last) for g in self._groups.values() if g.suppressed and g.last]
			for group in self._groups.values():
				group.suppressed = 0
		for count, last in pending:
			# The held-back failures share the last one's queue, key and error type: keep them.
			error = f"identical failures since the last notice: {last.error}"
			self.inner.notify(replace(last, message_id="", error=error, suppressed=count))


@dataclass
class _Group:
	sent_at: float
	suppressed: int = 0
	last: FailureNotice | None = None


def build_notifier(
	sentry_dsn: str | None = None, extra: Iterable[Notifier] = (), window_seconds: float = 300.0
) -> Notifier:
	"""Logging always, Sentry when a DSN is configured, all behind one rate limit."""
	notifiers: list[Any] = [LoggingNotifier(), *extra]
	if sentry_dsn:
		notifiers.append(SentryNotifier(sentry_dsn))
	return RateLimitedNotifier(FanoutNotifier(notifiers), window_seconds)
