"""Relaying the outbox: stored PENDING messages go to the broker in the order they were written.

Whoever writes a message as PENDING inside their own transaction (the Frappe document hook, a
service's own unit of work) only needs this relay to run after commit, or on a timer, to get
"nothing published before its transaction commits, nothing lost after it does".
"""

from __future__ import annotations

import logging

from frappe_eda.messaging.publisher import Publisher, envelope_from_record
from frappe_eda.messaging.store import Direction, MessageFilter, MessageStore, Status

log = logging.getLogger(__name__)


class OutboxRelay:
	def __init__(self, publisher: Publisher, store: MessageStore, batch_size: int = 500) -> None:
		self.publisher = publisher
		self.store = store
		self.batch_size = batch_size

	def relay_once(self) -> int:
		"""Send one batch of PENDING messages; returns how many the broker confirmed."""
		records = self.store.find(
			MessageFilter(direction=Direction.OUTGOING, statuses=(Status.PENDING,), limit=self.batch_size)
		)
		if not records:
			return 0
		report = self.publisher.send_recorded([envelope_from_record(r) for r in records])
		return len(report.confirmed)

	def drain(self) -> int:
		"""Relay until nothing is pending (or a batch makes no progress); returns the total confirmed."""
		total = 0
		while True:
			sent = self.relay_once()
			total += sent
			if sent < self.batch_size:
				return total
