"""A handler that commits or rolls back the store's transaction itself (through
``current_context().store.connection``), on SQLite, MariaDB and PostgreSQL.

The worker records a message in the transaction that holds the handler's writes; a handler that ends
that transaction breaks the atomicity of effect and record. Before, the savepoint's release raised an
opaque SQLAlchemy error, the batch could not be recorded and came back again and again, each time
committing the handler's effect once more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from frappe_eda.messaging.context import current_context
from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.errors import HandlerCommitted, HandlerEndedTransaction, TransactionLost
from frappe_eda.messaging.processing import Delivery, DeliveryProcessor, Outcome
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.store import Direction, Status
from frappe_eda.stores import open_store
from frappe_eda.stores.sql import SqlStore

QUEUE = "effects.q"


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[SqlStore]:
	if request.param == "sqlite":
		url = f"sqlite:///{tmp_path / 'eda.sqlite3'}"
	else:
		url = request.getfixturevalue("mariadb_url" if request.param == "mariadb" else "postgres_url")
	store = open_store(url)
	assert isinstance(store, SqlStore)
	with store.engine.begin() as db:
		db.execute(text("DROP TABLE IF EXISTS handler_effect"))
		db.execute(text("CREATE TABLE handler_effect (message_id VARCHAR(64) NOT NULL)"))
	try:
		yield store
	finally:
		with store.engine.begin() as db:
			db.execute(text("DROP TABLE handler_effect"))
		store.close()


def _processor(store: SqlStore, ends: dict[str, str]) -> DeliveryProcessor:
	"""A handler that writes its effect through the store's transaction, then commits or rolls back
	the whole transaction when its message's ``n`` is in ``ends``."""
	registry = HandlerRegistry()

	def handler(message: Message) -> None:
		connection = current_context().store.connection
		connection.execute(text("INSERT INTO handler_effect VALUES (:id)"), {"id": message.id})
		action = ends.get(str(message.payload["n"]))
		if action == "commit":
			connection.commit()
		elif action == "rollback":
			connection.rollback()

	registry.subscribe("effect.*", queue=QUEUE, exchange="x")(handler)
	return DeliveryProcessor(registry, store, RetryPolicy(max_attempts=3, delays=(1,)))


def _batch(count: int) -> tuple[list[Message], list[Delivery]]:
	messages = [Message(type="effect.made", payload={"n": n}) for n in range(count)]
	return messages, [Delivery(queue=QUEUE, routing_key="effect.made", body=encode(m)) for m in messages]


def _effects(store: SqlStore) -> list[str]:
	with store.engine.connect() as db:
		return [row[0] for row in db.execute(text("SELECT message_id FROM handler_effect"))]


def _status(store: SqlStore, message: Message) -> Status | None:
	record = store.get(message.id, Direction.INCOMING, QUEUE)
	return record.status if record else None


def test_a_handler_that_commits_is_dead_at_once_and_its_effect_happens_once(store: SqlStore) -> None:
	messages, deliveries = _batch(3)
	decisions = _processor(store, {"1": "commit"}).process(deliveries)

	assert [d.outcome for d in decisions] == [Outcome.PROCESSED, Outcome.DEAD, Outcome.PROCESSED]
	assert sorted(_effects(store)) == sorted(m.id for m in messages)
	assert [_status(store, m) for m in messages] == [Status.PROCESSED, Status.DEAD, Status.PROCESSED]
	[error] = store.errors(messages[1].id, QUEUE)
	assert error.exception_type.endswith("HandlerCommitted")
	assert "called connection.commit()" in error.error and "test_handler_ends_transaction.py" in error.error
	assert "Remove connection.commit()" in error.error


def test_a_first_handler_that_rolls_back_is_retried_and_leaves_no_effect(store: SqlStore) -> None:
	messages, deliveries = _batch(2)
	decisions = _processor(store, {"0": "rollback"}).process(deliveries)

	assert [d.outcome for d in decisions] == [Outcome.RETRY, Outcome.PROCESSED]
	assert isinstance(decisions[0].error, object)
	assert decisions[0].error is not None and decisions[0].error.exception_type.endswith(
		"HandlerEndedTransaction"
	)
	assert _effects(store) == [messages[1].id]
	assert [_status(store, m) for m in messages] == [Status.FAILED, Status.PROCESSED]


def test_a_rollback_that_took_other_messages_writes_fails_the_batch_unrecorded(store: SqlStore) -> None:
	messages, deliveries = _batch(3)
	with pytest.raises(TransactionLost):
		_processor(store, {"1": "rollback"}).process(deliveries)
	assert _effects(store) == []
	assert [_status(store, m) for m in messages] == [None, None, None]


@pytest.mark.parametrize("end", [HandlerCommitted, HandlerEndedTransaction])
def test_the_errors_say_which_call_to_remove(end: Callable[..., Exception]) -> None:
	error = end("connection.commit()", "myservice/handlers.py:12 in reserve", "myservice.handlers.reserve")
	assert "myservice.handlers.reserve" in str(error) and "myservice/handlers.py:12" in str(error)


def test_a_commit_makes_the_records_of_the_batch_so_far_durable_before_a_later_rollback(
	store: SqlStore,
) -> None:
	"""The commit made message 0's effect durable; a later rollback in the batch must not take its
	record back, or the batch would run again and apply that effect twice."""
	messages, deliveries = _batch(4)
	decisions = _processor(store, {"1": "commit", "2": "rollback"}).process(deliveries)

	assert [d.outcome for d in decisions] == [
		Outcome.PROCESSED,
		Outcome.DEAD,
		Outcome.RETRY,
		Outcome.PROCESSED,
	]
	assert sorted(_effects(store)) == sorted([messages[0].id, messages[1].id, messages[3].id])
	assert [_status(store, m) for m in messages] == [
		Status.PROCESSED,
		Status.DEAD,
		Status.FAILED,
		Status.PROCESSED,
	]
	again = _processor(store, {}).process(deliveries)  # the whole batch redelivered, now well-behaved
	assert [d.outcome for d in again][:1] == [Outcome.DUPLICATE]
	assert sorted(_effects(store)).count(messages[0].id) == 1


def test_a_redelivered_message_whose_handler_committed_does_not_run_again(store: SqlStore) -> None:
	"""The worker died after recording it dead, before the ack: the broker's copy must not commit again."""
	messages, deliveries = _batch(2)
	_processor(store, {"1": "commit"}).process(deliveries)
	redelivered = [dataclasses.replace(d, redelivered=True) for d in deliveries]

	again = _processor(store, {"1": "commit"}).process(redelivered)

	assert [d.outcome for d in again] == [Outcome.DUPLICATE, Outcome.DUPLICATE]
	assert sorted(_effects(store)) == sorted(m.id for m in messages)
