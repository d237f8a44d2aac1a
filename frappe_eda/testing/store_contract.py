"""The contract every ``MessageStore`` passes, written once.

A ``unittest`` mixin, so it runs under pytest (SQL and memory stores) and under Frappe's
``bench run-tests`` (the DocType store) alike::

    class TestMyStore(StoreContract, unittest.TestCase):
        def make_store(self):
            return MyStore(...)
"""

from __future__ import annotations

import threading
import time
import unittest
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from frappe_eda.messaging.errors import UnstorableMessage
from frappe_eda.messaging.storable import (
	ERROR_KEYS,
	MESSAGE_KEYS,
	check_error,
	check_message,
	fit_error,
	fit_message,
)
from frappe_eda.messaging.store import (
	Direction,
	ErrorRecord,
	MessageFilter,
	MessageRecord,
	MessageStore,
	Status,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def outgoing(message_id: str, *, routing_key: str = "sales_order.submitted", **fields: Any) -> MessageRecord:
	return MessageRecord(
		message_id=message_id,
		direction=Direction.OUTGOING,
		status=fields.pop("status", Status.PENDING),
		routing_key=routing_key,
		body=fields.pop("body", f'{{"id":"{message_id}"}}'),
		exchange=fields.pop("exchange", "erp.events"),
		**fields,
	)


def incoming(
	message_id: str, queue: str, *, routing_key: str = "sales_order.submitted", **fields: Any
) -> MessageRecord:
	return MessageRecord(
		message_id=message_id,
		direction=Direction.INCOMING,
		status=fields.pop("status", Status.PROCESSED),
		routing_key=routing_key,
		body=fields.pop("body", f'{{"id":"{message_id}"}}'),
		exchange=fields.pop("exchange", "erp.events"),
		queue=queue,
		**fields,
	)


def error(message_id: str, queue: str = "", attempt: int = 1, **fields: Any) -> ErrorRecord:
	return ErrorRecord(
		message_id=message_id,
		direction=fields.pop("direction", Direction.INCOMING if queue else Direction.OUTGOING),
		exception_type=fields.pop("exception_type", "RuntimeError"),
		error=fields.pop("error", f"failure {attempt}"),
		fingerprint=fields.pop("fingerprint", "f" * 16),
		attempt=attempt,
		queue=queue,
		traceback=fields.pop("traceback", "Traceback (most recent call last):\n  boom\nRuntimeError"),
		**fields,
	)


class StoreContract:
	"""Mix into a ``unittest.TestCase`` and implement ``make_store``."""

	store: MessageStore

	def make_store(self) -> MessageStore:
		raise NotImplementedError

	def cleanup_store(self, store: MessageStore) -> None:
		store.close()

	def make_peer_store(self) -> MessageStore:
		"""Another handle on the same data, as a second relay process would open it (closed after use).

		The default is the store itself: the relay claims are then tried from another thread of it.
		"""
		return self.store

	def claim_elsewhere(self) -> bool:
		"""Try the relay claim as a second relay would, on another thread; return whether it was granted.

		A store whose handles are bound to a thread's context (Frappe's ``frappe.local``) overrides this.
		"""
		peer = self.make_peer_store()
		granted: list[bool] = []

		def attempt() -> None:
			with peer.relay_claim() as held:
				granted.append(held)

		thread = threading.Thread(target=attempt)
		thread.start()
		thread.join(timeout=30)
		if peer is not self.store:
			peer.close()
		self.t.assertEqual(len(granted), 1, "the claim must answer at once, never wait")
		return granted[0]

	def setUp(self) -> None:
		super().setUp()  # type: ignore[misc]
		self.store = self.make_store()

	def tearDown(self) -> None:
		self.cleanup_store(self.store)
		super().tearDown()  # type: ignore[misc]

	@property
	def t(self) -> unittest.TestCase:
		assert isinstance(self, unittest.TestCase)
		return self

	# --- round trips ------------------------------------------------------------------------------

	def test_outgoing_record_round_trips_every_field(self) -> None:
		record = outgoing(
			"m-1",
			headers={"x-tenant": "acme", "nested": {"a": [1, 2]}},
			handler="",
			message_type="sales_order.submitted",
			attempts=2,
			last_error="PublishNacked: refused",
			replay_count=1,
			replay_of="m-0",
			resolved=True,
			reference_doctype="Sales Order",
			reference_name="SO-0001",
			created_at=T0,
			body='{"id":"m-1","payload":{"name":"Zoë ✓"}}',
		)
		self.store.save([record])
		got = self.store.get("m-1", Direction.OUTGOING)
		self.t.assertIsNotNone(got)
		assert got is not None
		for name in (
			"message_id",
			"direction",
			"status",
			"routing_key",
			"body",
			"exchange",
			"queue",
			"handler",
			"message_type",
			"headers",
			"attempts",
			"last_error",
			"replay_count",
			"replay_of",
			"resolved",
			"reference_doctype",
			"reference_name",
		):
			self.t.assertEqual(getattr(got, name), getattr(record, name), name)
		self.t.assertEqual(got.created_at, T0)
		self.t.assertIsNotNone(got.updated_at.tzinfo)

	def test_incoming_record_round_trips_with_its_queue_and_handler(self) -> None:
		self.store.save(
			[incoming("m-1", "inventory.orders", handler="inventory.handlers.reserve", attempts=3)]
		)
		got = self.store.get("m-1", Direction.INCOMING, "inventory.orders")
		assert got is not None
		self.t.assertEqual(
			(got.queue, got.handler, got.attempts), ("inventory.orders", "inventory.handlers.reserve", 3)
		)
		self.t.assertIsNone(self.store.get("m-1", Direction.INCOMING, "other.queue"))
		self.t.assertIsNone(self.store.get("m-1", Direction.OUTGOING))

	def test_large_body_is_kept_whole(self) -> None:
		body = '{"pad":"' + "x" * (1024 * 1024) + '"}'
		self.store.save([outgoing("big", body=body)])
		got = self.store.get("big", Direction.OUTGOING)
		assert got is not None
		self.t.assertEqual(len(got.body), len(body))

	def test_get_of_an_unknown_id_is_none(self) -> None:
		self.t.assertIsNone(self.store.get("nope", Direction.OUTGOING))

	# --- keys and upserts -------------------------------------------------------------------------

	def test_save_replaces_the_record_with_the_same_key(self) -> None:
		self.store.save([incoming("m-1", "q", status=Status.FAILED, attempts=1, last_error="boom")])
		first = self.store.get("m-1", Direction.INCOMING, "q")
		self.store.save([incoming("m-1", "q", status=Status.PROCESSED, attempts=2)])
		second = self.store.get("m-1", Direction.INCOMING, "q")
		assert first is not None and second is not None
		self.t.assertEqual((second.status, second.attempts, second.last_error), (Status.PROCESSED, 2, ""))
		self.t.assertGreaterEqual(second.updated_at, first.updated_at)
		self.t.assertEqual(sum(self.store.counts().values()), 1)

	def test_save_stamps_updated_at_whatever_the_record_says(self) -> None:
		before = datetime.now(timezone.utc) - timedelta(seconds=1)
		self.store.save([outgoing("m", created_at=T0, updated_at=T0)])
		got = self.store.get("m", Direction.OUTGOING)
		assert got is not None
		self.t.assertGreaterEqual(got.updated_at, before)
		self.t.assertEqual(got.created_at, T0)

	def test_the_last_record_of_a_key_in_one_batch_wins(self) -> None:
		self.store.save([outgoing("m", attempts=1), outgoing("m", status=Status.PUBLISHED, attempts=2)])
		got = self.store.get("m", Direction.OUTGOING)
		assert got is not None
		self.t.assertEqual((got.status, got.attempts), (Status.PUBLISHED, 2))
		self.t.assertEqual(sum(self.store.counts().values()), 1)

	def test_times_come_back_as_the_same_instant_in_utc(self) -> None:
		local = T0.astimezone(timezone(timedelta(hours=2)))
		self.store.save([outgoing("m", created_at=local)])
		self.store.add_error(error("m", occurred_at=local))
		got, [failure] = self.store.get("m", Direction.OUTGOING), self.store.errors("m")
		assert got is not None
		self.t.assertEqual((got.created_at, failure.occurred_at), (T0, T0))
		for value in (got.created_at, got.updated_at, failure.occurred_at):
			self.t.assertEqual(value.utcoffset(), timedelta(0))

	def test_one_id_in_two_queues_and_outgoing_is_three_records(self) -> None:
		self.store.save([outgoing("m-1"), incoming("m-1", "a"), incoming("m-1", "b", status=Status.DEAD)])
		self.t.assertEqual(sum(self.store.counts().values()), 3)
		dead = self.store.get("m-1", Direction.INCOMING, "b")
		assert dead is not None
		self.t.assertEqual(dead.status, Status.DEAD)

	def test_save_many_in_one_call(self) -> None:
		self.store.save([outgoing(f"m-{n}") for n in range(50)])
		self.t.assertEqual(self.store.counts(), {(Direction.OUTGOING, Status.PENDING): 50})

	def test_set_status_moves_a_batch_and_keeps_other_fields(self) -> None:
		self.store.save([outgoing("a", attempts=1), outgoing("b"), outgoing("c")])
		self.store.set_status(Direction.OUTGOING, ["a", "b"], Status.PUBLISHED)
		self.store.set_status(
			Direction.OUTGOING, ["c"], Status.FAILED, last_error="UnroutableMessage: no queue"
		)
		a, c = self.store.get("a", Direction.OUTGOING), self.store.get("c", Direction.OUTGOING)
		assert a is not None and c is not None
		self.t.assertEqual(
			(a.status, a.attempts, a.routing_key), (Status.PUBLISHED, 1, "sales_order.submitted")
		)
		self.t.assertEqual((c.status, c.last_error), (Status.FAILED, "UnroutableMessage: no queue"))

	def test_set_status_only_touches_the_named_queue(self) -> None:
		self.store.save([incoming("m", "a", status=Status.FAILED), incoming("m", "b", status=Status.FAILED)])
		self.store.set_status(Direction.INCOMING, ["m"], Status.DEAD, queue="a")
		a, b = self.store.get("m", Direction.INCOMING, "a"), self.store.get("m", Direction.INCOMING, "b")
		assert a is not None and b is not None
		self.t.assertEqual((a.status, b.status), (Status.DEAD, Status.FAILED))

	# --- the inbox --------------------------------------------------------------------------------

	def test_processed_ids_returns_only_processed_messages_of_that_queue(self) -> None:
		self.store.save(
			[
				incoming("done", "q"),
				incoming("failed", "q", status=Status.FAILED),
				incoming("dead", "q", status=Status.DEAD),
				incoming("elsewhere", "other"),
				outgoing("done-out", status=Status.PUBLISHED),
			]
		)
		found = self.store.processed_ids("q", ["done", "failed", "dead", "elsewhere", "done-out", "unknown"])
		self.t.assertEqual(found, {"done"})

	def test_dead_ids_returns_only_dead_messages_of_that_queue(self) -> None:
		self.store.save(
			[
				incoming("done", "q"),
				incoming("failed", "q", status=Status.FAILED),
				incoming("dead", "q", status=Status.DEAD),
				incoming("dead-elsewhere", "other", status=Status.DEAD),
				incoming("reopened", "q", status=Status.RECEIVED),
			]
		)
		found = self.store.dead_ids("q", ["done", "failed", "dead", "dead-elsewhere", "reopened", "unknown"])
		self.t.assertEqual(found, {"dead"})
		self.t.assertEqual(self.store.dead_ids("q", []), set())

	def test_processed_ids_of_many_ids_at_once(self) -> None:
		self.store.save([incoming(f"m-{n}", "q") for n in range(0, 1200, 2)])
		found = self.store.processed_ids("q", [f"m-{n}" for n in range(1200)])
		self.t.assertEqual(len(found), 600)
		self.t.assertEqual(self.store.processed_ids("q", []), set())

	# --- errors -----------------------------------------------------------------------------------

	def test_errors_come_back_oldest_first_with_every_field(self) -> None:
		for attempt in (1, 2, 3):
			self.store.add_error(
				error(
					"m",
					"q",
					attempt,
					handler="h",
					occurred_at=T0 + timedelta(seconds=attempt),
					resolved=attempt == 1,
				)
			)
		errors = self.store.errors("m", "q")
		self.t.assertEqual([e.attempt for e in errors], [1, 2, 3])
		first = errors[0]
		self.t.assertEqual(
			(
				first.exception_type,
				first.error,
				first.fingerprint,
				first.handler,
				first.direction,
				first.resolved,
			),
			("RuntimeError", "failure 1", "f" * 16, "h", Direction.INCOMING, True),
		)
		self.t.assertIn("RuntimeError", first.traceback)
		self.t.assertEqual(first.occurred_at, T0 + timedelta(seconds=1))

	def test_errors_filter_by_queue(self) -> None:
		self.store.add_error(error("m", "a"))
		self.store.add_error(error("m", "b"))
		self.store.add_error(error("other", "a"))
		self.t.assertEqual([e.queue for e in self.store.errors("m", "a")], ["a"])
		self.t.assertEqual(sorted(e.queue for e in self.store.errors("m")), ["a", "b"])
		self.t.assertEqual(self.store.errors("unknown"), [])

	# --- resolving --------------------------------------------------------------------------------

	def _resolve_seed(self) -> None:
		self.store.save(
			[
				incoming("m", "q", status=Status.DEAD),
				incoming("m", "other", status=Status.DEAD),
				incoming("n", "q", status=Status.DEAD),
				outgoing("m", status=Status.FAILED),
			]
		)
		for queue in ("q", "other"):
			self.store.add_error(error("m", queue, 1))
			self.store.add_error(error("m", queue, 2))
		self.store.add_error(error("n", "q"))
		self.store.add_error(error("m"))  # outgoing

	def _resolved(self, message_id: str, direction: Direction, queue: str) -> tuple[bool, list[bool]]:
		record = self.store.get(message_id, direction, queue)
		assert record is not None
		errors = [e.resolved for e in self.store.errors(message_id, queue) if e.direction is direction]
		return record.resolved, errors

	def test_resolve_marks_the_records_and_their_errors(self) -> None:
		self._resolve_seed()
		self.store.resolve(Direction.INCOMING, "q", ["m", "n", "unknown"])
		self.t.assertEqual(self._resolved("m", Direction.INCOMING, "q"), (True, [True, True]))
		self.t.assertEqual(self._resolved("n", Direction.INCOMING, "q"), (True, [True]))
		record = self.store.get("m", Direction.INCOMING, "q")
		assert record is not None
		self.t.assertEqual(record.status, Status.DEAD, "resolving leaves the status as it is")

	def test_resolve_leaves_other_queues_and_directions_alone(self) -> None:
		self._resolve_seed()
		self.store.resolve(Direction.INCOMING, "q", ["m"])
		self.t.assertEqual(self._resolved("m", Direction.INCOMING, "other"), (False, [False, False]))
		self.t.assertEqual(self._resolved("m", Direction.OUTGOING, ""), (False, [False]))
		self.t.assertEqual(self._resolved("n", Direction.INCOMING, "q"), (False, [False]))

	def test_resolve_an_outgoing_message(self) -> None:
		self._resolve_seed()
		self.store.resolve(Direction.OUTGOING, "", ["m"])
		self.t.assertEqual(self._resolved("m", Direction.OUTGOING, ""), (True, [True]))
		self.t.assertEqual(self._resolved("m", Direction.INCOMING, "q"), (False, [False, False]))

	def test_resolve_of_no_ids_is_a_no_op(self) -> None:
		self._resolve_seed()
		self.store.resolve(Direction.INCOMING, "q", [])
		for queue in ("q", "other"):
			self.t.assertEqual(self._resolved("m", Direction.INCOMING, queue), (False, [False, False]))

	def test_resolve_inside_a_transaction_rolls_back_with_it(self) -> None:
		self._resolve_seed()
		with self.t.assertRaises(RuntimeError):
			with self.store.transaction():
				self.store.resolve(Direction.INCOMING, "q", ["m"])
				raise RuntimeError("boom")
		self.t.assertEqual(self._resolved("m", Direction.INCOMING, "q"), (False, [False, False]))

	# --- queries ----------------------------------------------------------------------------------

	def _seed(self) -> None:
		self.store.save(
			[
				outgoing("o1", status=Status.PUBLISHED, created_at=T0),
				outgoing(
					"o2",
					status=Status.FAILED,
					routing_key="purchase_order.created",
					created_at=T0 + timedelta(minutes=1),
				),
				incoming("i1", "inventory", status=Status.DEAD, created_at=T0 + timedelta(minutes=2)),
				incoming(
					"i2",
					"inventory",
					status=Status.PROCESSED,
					routing_key="sales_order.cancelled",
					created_at=T0 + timedelta(minutes=3),
				),
				incoming(
					"i3",
					"billing",
					status=Status.FAILED,
					routing_key="sales_order.items.changed",
					created_at=T0 + timedelta(minutes=4),
				),
			]
		)

	def _ids(self, **query: Any) -> list[str]:
		return [r.message_id for r in self.store.find(MessageFilter(**query))]

	def test_find_everything_oldest_first(self) -> None:
		self._seed()
		self.t.assertEqual(self._ids(), ["o1", "o2", "i1", "i2", "i3"])

	def test_find_by_direction_and_statuses(self) -> None:
		self._seed()
		self.t.assertEqual(self._ids(direction=Direction.OUTGOING), ["o1", "o2"])
		self.t.assertEqual(self._ids(statuses=(Status.DEAD, Status.FAILED)), ["o2", "i1", "i3"])
		self.t.assertEqual(self._ids(direction=Direction.INCOMING, statuses=(Status.FAILED,)), ["i3"])

	def test_find_by_exact_routing_key(self) -> None:
		self._seed()
		self.t.assertEqual(self._ids(routing_key="sales_order.cancelled"), ["i2"])
		self.t.assertEqual(self._ids(routing_key="sales_order"), [])

	def test_find_by_topic_pattern_routes_like_rabbitmq(self) -> None:
		self._seed()
		self.t.assertEqual(self._ids(routing_key="sales_order.*"), ["o1", "i1", "i2"])
		self.t.assertEqual(self._ids(routing_key="sales_order.#"), ["o1", "i1", "i2", "i3"])
		self.t.assertEqual(self._ids(routing_key="#.created"), ["o2"])
		self.t.assertEqual(self._ids(routing_key="#"), ["o1", "o2", "i1", "i2", "i3"])

	def test_a_topic_pattern_matches_whole_words_only(self) -> None:
		keys = [
			"sales_order",
			"sales_order.submitted",
			"salesXorder.submitted",
			"sales_orders.submitted",
			"sales_order.items.changed",
		]
		self.store.save(
			[
				outgoing(str(n), routing_key=key, created_at=T0 + timedelta(seconds=n))
				for n, key in enumerate(keys)
			]
		)
		self.t.assertEqual(self._ids(routing_key="sales_order.*"), ["1"])
		self.t.assertEqual(self._ids(routing_key="sales_order.#"), ["0", "1", "4"])
		self.t.assertEqual(self._ids(routing_key="*.submitted"), ["1", "2", "3"])
		self.t.assertEqual(self._ids(routing_key="sales_order.*.changed"), ["4"])

	def test_find_by_queue_and_message_ids(self) -> None:
		self._seed()
		self.t.assertEqual(self._ids(queue="inventory"), ["i1", "i2"])
		self.t.assertEqual(self._ids(message_ids=("i3", "o1", "zz")), ["o1", "i3"])

	def test_find_by_time_range(self) -> None:
		self._seed()
		self.t.assertEqual(self._ids(since=T0 + timedelta(minutes=2)), ["i1", "i2", "i3"])
		self.t.assertEqual(self._ids(until=T0 + timedelta(minutes=1)), ["o1", "o2"])
		self.t.assertEqual(
			self._ids(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)), ["o2", "i1", "i2"]
		)

	def test_find_respects_the_limit_after_pattern_matching(self) -> None:
		self._seed()
		self.t.assertEqual(self._ids(limit=2), ["o1", "o2"])
		self.t.assertEqual(self._ids(routing_key="sales_order.*", limit=2), ["o1", "i1"])

	def test_counts_per_direction_and_status(self) -> None:
		self._seed()
		self.t.assertEqual(
			self.store.counts(),
			{
				(Direction.OUTGOING, Status.PUBLISHED): 1,
				(Direction.OUTGOING, Status.FAILED): 1,
				(Direction.INCOMING, Status.DEAD): 1,
				(Direction.INCOMING, Status.PROCESSED): 1,
				(Direction.INCOMING, Status.FAILED): 1,
			},
		)

	# --- retention --------------------------------------------------------------------------------

	def test_delete_finished_keeps_failed_dead_and_recent_records(self) -> None:
		self._seed()
		self.store.add_error(error("i2", "inventory"))
		self.store.add_error(error("i1", "inventory"))
		later = datetime.now(timezone.utc) + timedelta(seconds=5)
		deleted = self.store.delete_finished(before=later)
		self.t.assertEqual(deleted, 2)
		self.t.assertEqual(self._ids(), ["o2", "i1", "i3"])
		self.t.assertEqual(self.store.errors("i2"), [])
		self.t.assertEqual(len(self.store.errors("i1")), 1)
		self.store.save([incoming("fresh", "q")])
		self.t.assertEqual(self.store.delete_finished(before=T0), 0)
		self.t.assertIsNotNone(self.store.get("fresh", Direction.INCOMING, "q"))

	def test_delete_finished_spares_records_updated_after_the_cutoff(self) -> None:
		self.store.save([incoming("old", "q"), outgoing("old-out", status=Status.PUBLISHED)])
		time.sleep(0.01)
		cutoff = datetime.now(timezone.utc)
		time.sleep(0.01)
		self.store.save([incoming("new", "q")])
		self.t.assertEqual(self.store.delete_finished(before=cutoff), 2)
		self.t.assertEqual(self._ids(), ["new"])

	def test_delete_finished_keeps_the_errors_of_the_same_id_in_another_queue(self) -> None:
		self.store.save([incoming("m", "a"), incoming("m", "b", status=Status.DEAD)])
		self.store.add_error(error("m", "a"))
		self.store.add_error(error("m", "b"))
		self.t.assertEqual(
			self.store.delete_finished(before=datetime.now(timezone.utc) + timedelta(seconds=5)), 1
		)
		self.t.assertEqual([e.queue for e in self.store.errors("m")], ["b"])
		self.t.assertIsNotNone(self.store.get("m", Direction.INCOMING, "b"))

	# --- failures the relay sends again --------------------------------------------------------------

	def test_failed_with_finds_unresolved_failures_of_one_type_oldest_first(self) -> None:
		still = "frappe_eda.messaging.errors.StillNacked"
		self.store.save(
			[
				outgoing(
					"late", status=Status.FAILED, last_error=f"{still}: nacked", created_at=T0 + timedelta(1)
				),
				outgoing("early", status=Status.FAILED, last_error=f"{still}: nacked", created_at=T0),
				outgoing(
					"full", status=Status.FAILED, last_error="frappe_eda.messaging.errors.PublishNacked: x"
				),
				outgoing("other", status=Status.FAILED, last_error=f"{still}Not: a longer class name"),
				outgoing("fixed", status=Status.FAILED, last_error=f"{still}: nacked", resolved=True),
				outgoing("waiting", status=Status.PENDING, last_error=f"{still}: nacked"),
				incoming("in", "q", status=Status.FAILED, last_error=f"{still}: nacked"),
			]
		)
		later = datetime.now(timezone.utc) + timedelta(seconds=5)
		found = self.store.failed_with(still, updated_before=later)
		self.t.assertEqual([r.message_id for r in found], ["early", "late"])
		self.t.assertEqual(
			[r.message_id for r in self.store.failed_with(still, updated_before=later, limit=1)], ["early"]
		)
		# Only what rested long enough: nothing was last updated an hour ago.
		self.t.assertEqual(self.store.failed_with(still, updated_before=later - timedelta(hours=1)), [])

	# --- transactions -----------------------------------------------------------------------------

	def test_transaction_commits_its_writes_together(self) -> None:
		with self.store.transaction():
			self.store.save([outgoing("a")])
			self.store.add_error(error("a"))
		self.t.assertIsNotNone(self.store.get("a", Direction.OUTGOING))
		self.t.assertEqual(len(self.store.errors("a")), 1)

	def test_transaction_rolls_back_every_write_on_error(self) -> None:
		with self.t.assertRaises(RuntimeError):
			with self.store.transaction():
				self.store.save([outgoing("a")])
				self.store.add_error(error("a"))
				self.store.set_status(Direction.OUTGOING, ["a"], Status.PUBLISHED)
				raise RuntimeError("handler failed")
		self.t.assertIsNone(self.store.get("a", Direction.OUTGOING))
		self.t.assertEqual(self.store.errors("a"), [])

	def test_nested_transaction_rolls_back_alone(self) -> None:
		with self.store.transaction():
			self.store.save([incoming("kept", "q")])
			with self.t.assertRaises(ValueError):
				with self.store.transaction():
					self.store.save([incoming("dropped", "q")])
					self.store.set_status(Direction.INCOMING, ["kept"], Status.DEAD, queue="q")
					raise ValueError("one message failed")
			self.store.save([incoming("after", "q")])
		self.t.assertEqual(
			sorted(self.store.processed_ids("q", ["kept", "dropped", "after"])), ["after", "kept"]
		)

	def test_a_failed_inner_level_keeps_the_writes_of_the_levels_around_it(self) -> None:
		with self.store.transaction():
			with self.store.transaction():
				self.store.save([incoming("middle", "q")])
				with self.t.assertRaises(ValueError):
					with self.store.transaction():
						self.store.save([incoming("inner", "q")])
						raise ValueError("inner failed")
				self.store.save([incoming("middle-after", "q")])
		found = self.store.processed_ids("q", ["middle", "inner", "middle-after"])
		self.t.assertEqual(found, {"middle", "middle-after"})

	def test_rolling_back_the_outer_level_discards_its_committed_inner_levels(self) -> None:
		with self.t.assertRaises(RuntimeError):
			with self.store.transaction():
				with self.store.transaction():
					self.store.save([incoming("inner", "q")])
				self.store.add_error(error("inner", "q"))
				raise RuntimeError("the batch failed after its messages")
		self.t.assertEqual(self.store.processed_ids("q", ["inner"]), set())
		self.t.assertEqual(self.store.errors("inner"), [])

	def test_reads_inside_a_transaction_see_its_own_writes(self) -> None:
		with self.store.transaction():
			self.store.save([incoming("m", "q")])
			self.t.assertEqual(self.store.processed_ids("q", ["m"]), {"m"})
			got = self.store.get("m", Direction.INCOMING, "q")
			self.t.assertIsNotNone(got)

	# --- the relay claim -----------------------------------------------------------------------------

	def _needs_exclusive_claim(self) -> None:
		if not self.store.relay_claim_exclusive:
			self.t.skipTest(f"{type(self.store).__name__} declares relay claims that do not exclude")

	def test_a_store_grants_the_relay_claim_when_nobody_holds_it(self) -> None:
		with self.store.relay_claim() as held:
			self.t.assertTrue(held)
		with self.store.relay_claim() as again:
			self.t.assertTrue(again)

	def test_the_relay_claim_is_held_by_one_relay_at_a_time(self) -> None:
		self._needs_exclusive_claim()
		started = time.monotonic()
		with self.store.relay_claim() as held:
			self.t.assertTrue(held)
			self.t.assertFalse(self.claim_elsewhere())
		self.t.assertLess(time.monotonic() - started, 10, "a refused claim answers at once")

	def test_a_released_relay_claim_goes_to_the_next_relay(self) -> None:
		self._needs_exclusive_claim()
		with self.store.relay_claim() as held:
			self.t.assertTrue(held)
		self.t.assertTrue(self.claim_elsewhere())
		with self.store.relay_claim() as again:
			self.t.assertTrue(again)

	def test_the_relay_claim_is_released_when_its_holder_fails(self) -> None:
		self._needs_exclusive_claim()
		with self.t.assertRaises(RuntimeError):
			with self.store.relay_claim() as held:
				self.t.assertTrue(held)
				raise RuntimeError("the broker went away mid-batch")
		self.t.assertTrue(self.claim_elsewhere())

	def test_holding_the_relay_claim_does_not_stop_others_writing(self) -> None:
		"""Publishers keep writing PENDING rows while a relay sends, and the holder records outcomes."""
		self.store.save([outgoing("before")])
		with self.store.relay_claim() as held:
			self.t.assertTrue(held)
			peer = self.make_peer_store()  # its own connections: SQLite's write lock would make it wait
			started = time.monotonic()
			peer.save([outgoing("during")])
			self.t.assertLess(time.monotonic() - started, 5, "a write waited for the relay claim")
			self.store.set_status(Direction.OUTGOING, ["before"], Status.PUBLISHED)
			if peer is not self.store:
				peer.close()
		self.t.assertIsNotNone(self.store.get("during", Direction.OUTGOING))
		got = self.store.get("before", Direction.OUTGOING)
		self.t.assertEqual(got.status if got else None, Status.PUBLISHED)

	def test_a_record_saved_again_after_replay_keeps_its_history_fields(self) -> None:
		original = incoming("m", "q", status=Status.DEAD, created_at=T0, attempts=3)
		self.store.save([original])
		self.store.save([replace(original, status=Status.RECEIVED, replay_count=1)])
		got = self.store.get("m", Direction.INCOMING, "q")
		assert got is not None
		self.t.assertEqual((got.status, got.replay_count, got.created_at), (Status.RECEIVED, 1, T0))

	# --- declared limits (what the worker checks before a handler runs) ---------------------------

	def _at_limit(self, name: str, limit: int) -> str:
		"""A value of ``name`` exactly at ``limit`` as the store measures it, with a non-ASCII first character
		(a store counting bytes and one counting characters both get a value at the edge)."""
		value = "ü" + "k" * (limit - 1)
		while self.store.stored_length(name, value) > limit:
			value = value[:-1]
		return value

	def test_a_record_at_every_declared_limit_round_trips_exactly(self) -> None:
		limits = self.store.limits
		values = {
			name: self._at_limit(name, limits.key_chars[name])
			for name in MESSAGE_KEYS
			if name in limits.key_chars
		}
		record = incoming(values.pop("message_id", "at-the-limit"), values.pop("queue", "q"), **values)
		record.created_at = limits.max_time
		if limits.max_int is not None:
			record.attempts = record.replay_count = limits.max_int
		check_message(record, self.store)
		self.store.save([record])
		got = self.store.get(record.message_id, Direction.INCOMING, record.queue)
		assert got is not None
		for name in (*MESSAGE_KEYS, "attempts", "replay_count"):
			self.t.assertEqual(getattr(got, name), getattr(record, name), name)
		self.t.assertEqual(got.created_at, limits.max_time)
		oldest = incoming("oldest", "q", created_at=limits.min_time)
		check_message(oldest, self.store)
		self.store.save([oldest])
		got = self.store.get("oldest", Direction.INCOMING, "q")
		assert got is not None
		self.t.assertEqual(got.created_at, limits.min_time)

	def test_an_error_at_every_declared_limit_round_trips_exactly(self) -> None:
		limits = self.store.limits
		values: dict[str, Any] = {
			name: self._at_limit(name, limits.key_chars[name])
			for name in ERROR_KEYS
			if name in limits.key_chars
		}
		texts: dict[str, Any] = {
			name: self._at_limit(name, limits.text_chars[name])
			for name in ("error", "traceback")
			if name in limits.text_chars
		}
		failure = error(values.pop("message_id", "m"), values.pop("queue", "q"), **values, **texts)
		check_error(failure, self.store)
		self.store.add_error(failure)
		[got] = self.store.errors(failure.message_id, failure.queue)
		for name in (*ERROR_KEYS, "error", "traceback"):
			self.t.assertEqual(getattr(got, name), getattr(failure, name), name)

	def test_the_check_refuses_a_value_over_each_declared_limit(self) -> None:
		limits = self.store.limits
		for name in MESSAGE_KEYS:
			if name not in limits.key_chars:
				continue
			over: dict[str, Any] = {name: self._at_limit(name, limits.key_chars[name]) + "k"}
			record = replace(incoming("m", "q"), **over)
			with self.t.assertRaises(UnstorableMessage) as caught:
				check_message(record, self.store)
			self.t.assertEqual(caught.exception.field, name)
			self.t.assertIn(f"limit of {limits.key_chars[name]}", str(caught.exception))
		if limits.max_int is not None:
			with self.t.assertRaises(UnstorableMessage):
				check_message(incoming("m", "q", attempts=limits.max_int + 1), self.store)
		if limits.min_time > datetime.min.replace(tzinfo=timezone.utc):
			with self.t.assertRaises(UnstorableMessage):
				check_message(
					incoming("m", "q", created_at=limits.min_time - timedelta(microseconds=1)), self.store
				)

	def test_the_check_refuses_what_no_store_can_hold(self) -> None:
		year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
		year_9999 = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-14)))
		for field, record in (
			("message_id", incoming("nul\x00id", "q")),
			("message_id", incoming("lone\ud800surrogate", "q")),
			("routing_key", incoming("m", "q", routing_key="a\x00b")),
			("message_type", incoming("m", "q", message_type="\udfff")),
			("created_at", incoming("m", "q", created_at=year_one)),
			("created_at", incoming("m", "q", created_at=year_9999)),
		):
			with self.t.assertRaises(UnstorableMessage) as caught:
				check_message(record, self.store)
			self.t.assertEqual(caught.exception.field, field)

	def test_display_fields_are_cut_to_fit_never_refused(self) -> None:
		limits = self.store.limits
		huge = "é<b>" * 40_000 + "\ud800\x00"
		record = fit_message(
			incoming("m", "q", last_error=huge, headers={"x-note": huge, "n": 1}), self.store
		)
		failure = fit_error(error("m", "q", error=huge, traceback=huge), self.store)
		for name, value in (
			("last_error", record.last_error),
			("error", failure.error),
			("traceback", failure.traceback),
		):
			if name in limits.text_chars:
				self.t.assertLessEqual(self.store.stored_length(name, value), limits.text_chars[name])
				if len(huge) > limits.text_chars[name]:  # (stored_length may not take the surrogate)
					self.t.assertIn("cut by frappe_eda", value)
		self.store.save([record])
		self.store.add_error(failure)
		got = self.store.get("m", Direction.INCOMING, "q")
		[stored] = self.store.errors("m", "q")
		assert got is not None
		self.t.assertEqual((got.last_error, got.headers), (record.last_error, record.headers))
		self.t.assertEqual((stored.error, stored.traceback), (failure.error, failure.traceback))
