"""What the publisher does when the broker turns a message away: fail it, or send it again later.

Two kinds of refusal look alike on the wire and must not be handled alike:

- **For now.** In a cluster a Basic.Nack usually means "not now": RabbitMQ nacks a publish to a quorum
  queue whose leader the channel's node cannot reach. A channel that first published to the queue while
  the queue's record still named a leader that just died keeps nacking every publish to that queue until
  that node answers again (RabbitMQ 3.10's ``rabbit_fifo_client``: its first enqueue asks the recorded
  leader's node, gets ``nodedown`` and rejects, without moving on), so the cure is a fresh channel, once
  another node leads. A channel the broker closes with 541 INTERNAL_ERROR (a queue process that crashed
  as its node went away) is the same: a fresh channel, a little later. ``Patience`` spaces those tries
  and bounds them.
- **Never.** A 406 or 403 channel close names what is wrong with the message, and a missing exchange
  (404) stays missing: ``after_refusal`` fails the one message the broker refused and lets the rest go.

A nack itself names no cause, and a full queue with ``x-overflow: reject-publish`` nacks as a queue
without a leader does. The publisher therefore retries nacks only where a leader can change: with a node
list (``BrokerSettings.nodes``), or when told to (``Publisher(retry_refused_for=...)``). Against a single
broker a nack stays what it was, FAILED at once.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

import pika.exceptions

from frappe_eda.messaging.errors import ExchangeNotFound, PublishRefused

if TYPE_CHECKING:
	from frappe_eda.messaging.publisher import Envelope, SendReport, _ConfirmWindow

log = logging.getLogger(__name__)

# How long a publisher with a node list keeps sending again what was nacked or lost to a channel the
# broker closed for now. A quorum queue elects a new leader within about a second of losing one; the
# bound leaves room for a slow election and a channel or two opened before it ended, and caps what a
# ``publish()`` caller can wait for one message.
RETRY_REFUSED_FOR = 15.0
# The first pause before sending again, doubled after each refusal up to LONGEST_PAUSE.
FIRST_PAUSE = 0.05
LONGEST_PAUSE = 2.0

# Channel closes that a fresh channel, a moment later, gets past: 541 INTERNAL_ERROR (the channel's
# queue client crashed, as when a quorum queue's leader node went away mid-call) and 320
# CONNECTION_FORCED, when a node being shut down closes a channel before its connection.
TRANSIENT_CLOSE_CODES = frozenset({320, 541})


class Patience:
	"""The bounded, growing pauses between sends of what the broker refused for now, in one ``send``.

	The clock starts at the first refusal: ``pause()`` returns the next pause (``FIRST_PAUSE``, doubling to
	``LONGEST_PAUSE``, never past the bound), or None once ``seconds`` have gone by since then.
	"""

	def __init__(self, seconds: float) -> None:
		self.seconds = max(0.0, seconds)
		self._since: float | None = None
		self._next = FIRST_PAUSE
		self.rounds = 0

	def pause(self) -> float | None:
		now = time.monotonic()
		if self._since is None:
			self._since = now
		left = self._since + self.seconds - now
		if left <= 0:
			return None
		pause, self._next = min(self._next, left), min(self._next * 2, LONGEST_PAUSE)
		self.rounds += 1
		return pause

	@property
	def spent(self) -> float:
		"""Seconds since the first refusal (0 before any)."""
		return 0.0 if self._since is None else time.monotonic() - self._since


def refusal(
	error: BaseException, window: _ConfirmWindow | None
) -> pika.exceptions.ChannelClosedByBroker | None:
	"""The broker's reason when it closed the channel (not the connection) over something sent on it."""
	if isinstance(error, pika.exceptions.ChannelClosedByBroker):
		return error
	reason = getattr(window.channel, "_closing_reason", None) if window is not None else None
	if isinstance(reason, pika.exceptions.ChannelClosedByBroker) and window is not None:
		if window.channel.connection.is_open:
			return reason
	return None


def is_transient(close: pika.exceptions.ChannelClosedByBroker) -> bool:
	"""Whether a fresh channel a moment later gets past this channel close."""
	return close.reply_code in TRANSIENT_CLOSE_CODES


def missing_exchange(error: pika.exceptions.ChannelClosedByBroker) -> str | None:
	found = re.search(r"no exchange '([^']*)'", error.reply_text or "") if error.reply_code == 404 else None
	return found[1] if found else None


def after_refusal(
	close: pika.exceptions.ChannelClosedByBroker,
	in_flight: list[Envelope],
	pending: list[Envelope],
	total: SendReport,
	alone: set[str],
) -> list[Envelope]:
	"""The broker closed the channel over a message for good: fail it if it is known, else isolate
	suspects. Returns what still needs sending, in order."""
	missing = missing_exchange(close)
	if missing is not None:
		# Everything meant for that exchange fails; the rest goes on a new channel.
		for envelope in [p for p in pending if p.exchange == missing]:
			total.failed[envelope.message_id] = ExchangeNotFound(
				envelope.message_id, envelope.exchange, envelope.routing_key
			)
		return [p for p in pending if p.exchange != missing]
	if len(in_flight) == 1:
		# Everything before it was confirmed and the broker ignores what follows a refusal: it is this one.
		culprit = in_flight[0]
		total.failed[culprit.message_id] = PublishRefused(
			culprit.message_id,
			culprit.exchange,
			culprit.routing_key,
			close.reply_code,
			close.reply_text,
		)
		log.warning("broker refused message %s: %s", culprit.message_id, close)
		return [p for p in pending if p.message_id != culprit.message_id]
	# One of those in flight was refused, which one is unknown: the broker dropped the ones after it and
	# may have taken the ones before (consumers' inboxes drop a copy). Send each again on its own.
	alone.update(e.message_id for e in in_flight)
	return pending
