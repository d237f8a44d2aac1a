"""The worker's periodic duties: a throughput line while busy, and a heartbeat for an operator view.

Both run on the worker's loop thread, at the wake-ups the loop has anyway (after each batch, and after
each poll of the connection, which returns at least every ``poll_seconds`` when idle): pika's connection
is single-threaded, and a thread of our own would have to share it or the worker's state. So an
interval is a lower bound: a tick comes when the batch in hand is done.

- The throughput line (logger ``frappe_eda.messaging.consumer``, INFO) covers one interval
  (``report_every``, 60 s by default) in which something was handled: counts by outcome, the rate and
  the busiest queues. An idle interval prints nothing, so a quiet worker's log stays quiet.
- The heartbeat hands a ``WorkerBeat`` (who the worker is and its cumulative counts) to a callback once
  at start, every ``heartbeat_every`` seconds even when idle, and once when it stops (``stopped``). An
  operator view tells a dead worker from a live one by ``last_seen``: see ``stale_after``. The callback
  may fail (its database is away): that is logged and the worker goes on.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
	from frappe_eda.messaging.consumer import WorkerStats

# The throughput line is the consumer's: whoever shows the worker's log shows it.
log = logging.getLogger("frappe_eda.messaging.consumer")

DEFAULT_REPORT_EVERY = 60.0
DEFAULT_HEARTBEAT_EVERY = 15.0
# Queues named in one throughput line; the rest are summed up ("3 more queues 40").
REPORTED_QUEUES = 10
# Missed beats before a worker shows as stale; a batch in hand delays a beat, hence the floor.
STALE_AFTER_BEATS = 3
MIN_STALE_SECONDS = 60.0
# The cumulative counts a beat carries: fields of both ``WorkerStats`` and ``WorkerBeat``, and the
# columns of every store's worker rows.
COUNTERS = ("processed", "duplicates", "retried", "dead", "reconnects", "store_failures", "refused")


@dataclass(frozen=True)
class WorkerBeat:
	"""One heartbeat of a running worker: who it is, since when, and what it has done (cumulative)."""

	worker_id: str
	host: str
	pid: int
	queues: tuple[str, ...]
	started_at: datetime
	last_seen: datetime
	processed: int = 0
	duplicates: int = 0
	retried: int = 0
	dead: int = 0
	reconnects: int = 0
	store_failures: int = 0
	refused: int = 0
	heartbeat_every: float = DEFAULT_HEARTBEAT_EVERY
	stopped: bool = False

	@property
	def handled(self) -> int:
		return self.processed + self.duplicates + self.retried + self.dead

	def state(self, now: datetime | None = None) -> str:
		"""``alive``, ``stale`` (no beat for longer than ``stale_after`` allows) or ``stopped``."""
		if self.stopped:
			return "stopped"
		return "stale" if self.age(now) > stale_after(self.heartbeat_every) else "alive"

	def age(self, now: datetime | None = None) -> float:
		"""Seconds since the last beat."""
		return max(0.0, ((now or datetime.now(timezone.utc)) - self.last_seen).total_seconds())


def stale_after(heartbeat_every: float) -> float:
	"""Seconds without a beat after which a worker that did not say it stopped is taken for dead."""
	return max(STALE_AFTER_BEATS * heartbeat_every, MIN_STALE_SECONDS)


def show_worker_log(stream: Any = None) -> None:
	"""Let the core's INFO lines (the throughput line, stopping on a signal) reach ``stream`` (stderr)
	in a process that set up no logging (``bench``), where logging's last resort would show warnings
	and errors only. A level set on a ``frappe_eda`` logger, or a handler on the way up, is left alone."""
	core = logging.getLogger("frappe_eda.messaging")
	chain = [core, logging.getLogger("frappe_eda")]
	if all(logger.level == logging.NOTSET for logger in chain) and core.getEffectiveLevel() > logging.INFO:
		core.setLevel(logging.INFO)
	if not core.hasHandlers():
		handler = logging.StreamHandler(stream or sys.stderr)
		handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
		core.addHandler(handler)


def new_worker_id(host: str | None = None, pid: int | None = None) -> str:
	"""``host:pid:xxxxxxxx``, unique per run: a pid is reused, and a container's host name repeats."""
	return f"{host or socket.gethostname()}:{pid or os.getpid()}:{uuid.uuid4().hex[:8]}"


class WorkerTicks:
	"""Decides, at each of the loop's wake-ups, whether a throughput line or a heartbeat is due."""

	def __init__(
		self,
		stats: WorkerStats,
		queues: Sequence[str],
		*,
		report_every: float | None = DEFAULT_REPORT_EVERY,
		on_heartbeat: Callable[[WorkerBeat], None] | None = None,
		heartbeat_every: float = DEFAULT_HEARTBEAT_EVERY,
		clock: Callable[[], float] = time.monotonic,
	) -> None:
		self.stats = stats
		self.queues = tuple(queues)
		self.report_every = report_every if report_every and report_every > 0 else None
		self.on_heartbeat = on_heartbeat
		self.heartbeat_every = max(heartbeat_every, 0.01)
		self._clock = clock
		self.worker_id = ""
		self.host = socket.gethostname()
		self.pid = os.getpid()
		self.started_at = datetime.now(timezone.utc)
		self._per_queue: Counter[str] = Counter()
		self._window_start = 0.0
		self._window_counts = _counts(stats)
		self._next_beat = 0.0
		self._beat_failures = 0
		self._running = False

	# --- called by the worker ---------------------------------------------------------------------

	def start(self) -> None:
		"""A run begins: a new worker id, the first beat, and a fresh throughput window."""
		self.worker_id = new_worker_id(self.host, self.pid)
		self.started_at = datetime.now(timezone.utc)
		self._running = True
		now = self._clock()
		self._open_window(now)
		self._beat(now)

	def handled(self, queue: str) -> None:
		"""One delivery of ``queue`` settled (the outcome is counted in the stats)."""
		self._per_queue[queue] += 1

	def tick(self) -> None:
		"""Log the throughput line, beat, or neither: whatever is due now."""
		if not self._running:
			return
		now = self._clock()
		if self.report_every is not None and now - self._window_start >= self.report_every:
			self._report(now)
		if self.on_heartbeat is not None and now >= self._next_beat:
			self._beat(now)

	def wait_limit(self, poll_seconds: float) -> float:
		"""How long the loop may wait for deliveries before the next duty is due."""
		if not self._running:
			return poll_seconds
		now = self._clock()
		due = []
		if self.report_every is not None:
			due.append(self._window_start + self.report_every - now)
		if self.on_heartbeat is not None:
			due.append(self._next_beat - now)
		return max(0.0, min([poll_seconds, *due]))

	def stop(self) -> None:
		"""The run ended: the last beat says so (an operator view shows the worker stopped, not stale)."""
		if not self._running:
			return
		self._running = False
		self._beat(self._clock(), stopped=True)

	def beat(self, stopped: bool = False) -> WorkerBeat:
		s = self.stats
		return WorkerBeat(
			worker_id=self.worker_id,
			host=self.host,
			pid=self.pid,
			queues=self.queues,
			started_at=self.started_at,
			last_seen=datetime.now(timezone.utc),
			**{counter: getattr(s, counter) for counter in COUNTERS},
			heartbeat_every=self.heartbeat_every,
			stopped=stopped,
		)

	# --- the duties -------------------------------------------------------------------------------

	def _open_window(self, now: float) -> None:
		self._window_start = now
		self._window_counts = _counts(self.stats)
		self._per_queue.clear()

	def _report(self, now: float) -> None:
		before, after = self._window_counts, _counts(self.stats)
		processed, duplicates, retried, dead = (a - b for a, b in zip(after, before, strict=True))
		handled = processed + duplicates + retried + dead
		if handled > 0:
			elapsed = max(now - self._window_start, 1e-9)
			log.info(
				"last %ss: %d handled (%d processed, %d duplicates, %d retried, %d dead), %.1f/s; queues: %s",
				f"{elapsed:.0f}" if elapsed >= 10 else f"{elapsed:.1f}",
				handled,
				processed,
				duplicates,
				retried,
				dead,
				handled / elapsed,
				_busiest(self._per_queue),
			)
		self._open_window(now)

	def _beat(self, now: float, stopped: bool = False) -> None:
		self._next_beat = now + self.heartbeat_every
		if self.on_heartbeat is None:
			return
		try:
			self.on_heartbeat(self.beat(stopped))
		except Exception as e:
			self._beat_failures += 1
			if self._beat_failures == 1:
				log.exception("the heartbeat callback failed; the worker goes on")
			else:
				log.warning(
					"the heartbeat callback failed again (%d times in a row): %s: %s",
					self._beat_failures,
					type(e).__name__,
					e,
				)
			return
		if self._beat_failures:
			log.info("the heartbeat callback works again after %d failures", self._beat_failures)
			self._beat_failures = 0


def _counts(stats: WorkerStats) -> tuple[int, int, int, int]:
	return stats.processed, stats.duplicates, stats.retried, stats.dead


def _busiest(per_queue: Counter[str]) -> str:
	ranked = per_queue.most_common()
	shown = ", ".join(f"{queue} {count}" for queue, count in ranked[:REPORTED_QUEUES])
	rest = ranked[REPORTED_QUEUES:]
	if rest:
		shown += f", {len(rest)} more queues {sum(count for _q, count in rest)}"
	return shown
