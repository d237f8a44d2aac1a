"""Relaying the outbox: stored PENDING messages go to the broker in the order they were written.

Whoever writes a message as PENDING inside their own transaction (the Frappe document hook, a
service's own unit of work) only needs this relay to run after commit, or on a timer, to get
"nothing published before its transaction commits, nothing lost after it does".

Any number of relays may run on one store (each worker, ``bench eda relay``, the scheduler): each batch
is sent under the store's relay claim (``MessageStore.relay_claim``), so one relay at a time reads the
oldest PENDING messages, sends them and records the outcomes; a relay that finds the claim taken
returns at once, since the holder is sending what is pending. A message the broker cannot take is
recorded FAILED with its error and waits for a replay; it never holds back the messages behind it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from frappe_eda.messaging.publisher import Publisher, envelope_from_record
from frappe_eda.messaging.store import Direction, MessageFilter, MessageStore, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Batch:
	found: int
	confirmed: int
	failed: int


class OutboxRelay:
	def __init__(self, publisher: Publisher, store: MessageStore, batch_size: int = 500) -> None:
		self.publisher = publisher
		self.store = store
		self.batch_size = batch_size
		self.more_pending = False  # the last drain(max_batches=...) stopped with more to send

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
			return _Batch(len(records), len(report.confirmed), len(report.failed))
