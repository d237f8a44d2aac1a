"""Relaying the outbox: stored PENDING messages go to the broker in the order they were written.

Whoever writes a message as PENDING inside their own transaction (the Frappe document hook, a
service's own unit of work) only needs this relay to run after commit, or on a timer, to get
"nothing published before its transaction commits, nothing lost after it does".

Any number of relays may run on one store (each worker, ``bench eda relay``, the scheduler): each batch
is sent under the store's relay claim (``MessageStore.relay_claim``), so one relay at a time reads the
oldest PENDING messages, sends them and records the outcomes; a relay that finds the claim taken
returns at once, since the holder is sending what is pending. A message the broker cannot take is
recorded FAILED with its error and waits for a replay; it never holds back the messages behind it.

Except a message the broker refused only for now: the publisher sends a nacked message again on fresh
channels for a while (``Publisher(retry_refused_for=...)``, ``refusals``), and one that outlasts that is
FAILED with ``StillNacked``. The relay puts those back in line on its own schedule: a batch takes the
ones last tried ``retry_refused_after`` seconds ago or more (PENDING again, oldest first, so they go out
before what was written after them), and marks each resolved once the broker confirmed it. So no
message a leader change or a lost node refused waits for someone to replay it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from frappe_eda.messaging.envelope import utcnow
from frappe_eda.messaging.errors import StillNacked
from frappe_eda.messaging.publisher import Publisher, envelope_from_record
from frappe_eda.messaging.store import Direction, MessageFilter, MessageStore, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Batch:
	found: int
	confirmed: int
	failed: int


# The qualified name ``last_error`` starts with for a message refused only for now.
STILL_NACKED = f"{StillNacked.__module__}.{StillNacked.__qualname__}"
# How long a message FAILED with ``StillNacked`` rests before the relay sends it again.
RETRY_REFUSED_AFTER = 60.0
# How often at most a relay asks its store for such messages: a worker relays between every two batches
# it consumes, and the question is a query on the failures.
REFUSED_CHECK_EVERY = 10.0


class OutboxRelay:
	"""Sends a store's PENDING outgoing messages in the order they were written (see the module).

	``retry_refused_after``: seconds a message FAILED with ``StillNacked`` rests before a batch sends it
	again (``None``: never; it then waits for a replay like any FAILED message)."""

	def __init__(
		self,
		publisher: Publisher,
		store: MessageStore,
		batch_size: int = 500,
		retry_refused_after: float | None = RETRY_REFUSED_AFTER,
	) -> None:
		self.publisher = publisher
		self.store = store
		self.batch_size = batch_size
		self.retry_refused_after = retry_refused_after
		self.more_pending = False  # the last drain(max_batches=...) stopped with more to send
		self.requeued = 0  # messages FAILED with StillNacked this relay put back in line
		self._refused_checked_at: float | None = None  # time.monotonic() of the last ask

	def relay_once(self, older_than: datetime | None = None) -> int:
		"""Send one batch of PENDING messages; returns how many the broker confirmed (0 when another
		relay holds the claim)."""
		batch = self._claimed_batch(older_than)
		return 0 if batch is None else batch.confirmed

	def drain(self, older_than: datetime | None = None, max_batches: int | None = None) -> int:
		"""Relay until nothing is pending, or another relay holds the claim; returns the total confirmed.

		``older_than`` relays only messages created at or before it: a scheduled re-drive sends what
		nobody else picked up, not what a live relay is about to send. ``max_batches`` stops after that
		many batches (``more_pending`` then says whether the last one came back full): a worker relays
		between the batches it consumes, and must not hold its loop until a large outbox is empty.
		"""
		total = 0
		batches = 0
		self.more_pending = False
		while True:
			batch = self._claimed_batch(older_than)
			if batch is None:
				return total
			total += batch.confirmed
			batches += 1
			if batch.found < self.batch_size or not (batch.confirmed or batch.failed):
				return total
			if max_batches is not None and batches >= max_batches:
				self.more_pending = True
				return total

	def _claimed_batch(self, older_than: datetime | None) -> _Batch | None:
		with self.store.relay_claim() as held:
			if not held:
				log.debug("another relay holds the claim on %r; it sends what is pending", self.store)
				return None
			again = self._requeue_refused(older_than)
			records = self.store.find(
				MessageFilter(
					direction=Direction.OUTGOING,
					statuses=(Status.PENDING,),
					until=older_than,
					limit=self.batch_size,
				)
			)
			if not records:
				return _Batch(0, 0, 0)
			report = self.publisher.send_recorded([envelope_from_record(r) for r in records])
			sent_again = [i for i in report.confirmed if i in again]
			if sent_again:
				# Its FAILED record and StillNacked error leave the failure lists, as a confirmed replay's do.
				self.store.resolve(Direction.OUTGOING, "", sent_again)
			return _Batch(len(records), len(report.confirmed), len(report.failed))

	def _requeue_refused(self, older_than: datetime | None) -> set[str]:
		"""Put messages FAILED with ``StillNacked`` whose rest is over back in line (PENDING); their ids."""
		if self.retry_refused_after is None:
			return set()
		now = time.monotonic()
		every = min(REFUSED_CHECK_EVERY, self.retry_refused_after)
		if self._refused_checked_at is not None and now - self._refused_checked_at < every:
			return set()
		self._refused_checked_at = now
		rested = utcnow() - timedelta(seconds=self.retry_refused_after)
		records = [
			r
			for r in self.store.failed_with(STILL_NACKED, updated_before=rested, limit=self.batch_size)
			if older_than is None or r.created_at <= older_than
		]
		if not records:
			return set()
		ids = [r.message_id for r in records]
		self.store.set_status(Direction.OUTGOING, ids, Status.PENDING)
		self.requeued += len(ids)
		log.info("sending again %d messages the broker refused for now (StillNacked)", len(ids))
		return set(ids)
