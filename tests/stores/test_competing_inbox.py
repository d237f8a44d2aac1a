"""Two workers holding copies of one message at the same moment run its handler once (``claim_inbox``).

Competing consumers on one queue can both hold an id: a producer resent it after a lost confirm, or a
worker whose broker node died is still finishing a batch the broker has already handed to another
worker. Each worker here has a store (and database connections) of its own, as two processes do; the
first handler is held inside its transaction until the second worker has started its batch.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from frappe_eda.messaging.context import current_context
from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.processing import Delivery, DeliveryProcessor, Outcome
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.stores.sql import SqlStore

QUEUE = "competing.q"


@pytest.fixture
def stores(url: str) -> Iterator[tuple[SqlStore, SqlStore]]:
	prefix = f"eda_{uuid.uuid4().hex[:8]}_"
	first, second = SqlStore(url, table_prefix=prefix), SqlStore(url, table_prefix=prefix)
	with first.engine.begin() as db:
		db.execute(text(f"CREATE TABLE {prefix}effect (message_id VARCHAR(64) NOT NULL)"))
	try:
		yield first, second
	finally:
		with first.engine.begin() as db:
			db.execute(text(f"DROP TABLE {prefix}effect"))
		first.metadata.drop_all(first.engine)
		first.close()
		second.close()


def test_two_workers_with_the_same_message_at_once_apply_it_once(stores: tuple[SqlStore, SqlStore]) -> None:
	first, second = stores
	table = f"{first.messages.name.removesuffix('message')}effect"
	in_handler, second_started = threading.Event(), threading.Event()
	ran: list[str] = []

	def handler(message: Message) -> None:
		ran.append(threading.current_thread().name)
		current_context().store.connection.execute(  # type: ignore[attr-defined]
			text(f"INSERT INTO {table} (message_id) VALUES (:id)"), {"id": message.id}
		)
		if threading.current_thread().name == "first":
			in_handler.set()
			# Hold the transaction open until the other worker is inside its batch (or gave up).
			second_started.wait(timeout=30)

	registry = HandlerRegistry()
	registry.subscribe("item.*", queue=QUEUE, exchange="x")(handler)
	message = Message("item.made", {"n": 1})
	outcomes: dict[str, Outcome] = {}

	def work(store: SqlStore, name: str) -> None:
		processor = DeliveryProcessor(registry, store, RetryPolicy(max_attempts=3, delays=(1,)))
		delivery = Delivery(queue=QUEUE, routing_key="item.made", body=encode(message))
		outcomes[name] = processor.process([delivery])[0].outcome

	one = threading.Thread(target=work, args=(first, "first"), name="first")
	one.start()
	assert in_handler.wait(timeout=30)
	two = threading.Thread(target=work, args=(second, "second"), name="second")
	two.start()
	# The second worker blocks on the claim (or, on SQLite, on BEGIN IMMEDIATE) while the first holds it.
	two.join(timeout=1)
	second_started.set()
	one.join(timeout=60)
	two.join(timeout=60)
	with first.engine.connect() as db:
		effects = db.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
	assert effects == 1
	assert ran == ["first"]
	assert outcomes == {"first": Outcome.PROCESSED, "second": Outcome.DUPLICATE}


def test_a_claim_held_too_long_is_a_transient_error_and_claims_end_with_the_transaction(
	stores: tuple[SqlStore, SqlStore], monkeypatch: pytest.MonkeyPatch
) -> None:
	"""The second worker gives up waiting with an error the worker tries again (MariaDB: ``GET_LOCK``'s
	timeout; PostgreSQL waits as for any lock, bounded here by ``lock_timeout``); other ids are not held
	up; once the first transaction ends its claims are gone, and on MariaDB nothing stays locked."""
	from frappe_eda.stores import sql_inbox_claim

	first, second = stores
	dialect = first.engine.dialect.name
	if dialect == "sqlite":
		pytest.skip("SQLite transactions never overlap: no claim is taken")
	monkeypatch.setattr(sql_inbox_claim, "WAIT_SECONDS", 1)
	ids = [f"id-{n}" for n in range(150)]  # more than one statement's worth of locks
	with first.transaction():
		first.claim_inbox(QUEUE, ids)
		with pytest.raises(Exception) as raised, second.transaction():
			if dialect == "postgresql":
				second.connection.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
			second.claim_inbox(QUEUE, ["a-free-id", ids[0], ids[-1]])
		if dialect != "postgresql":
			assert isinstance(raised.value, sql_inbox_claim.InboxClaimTimeout)
			assert second.is_transient(raised.value)
		with second.transaction():
			second.claim_inbox(QUEUE, ["other-id"])
	with second.transaction():
		second.claim_inbox(QUEUE, ids)
	if dialect != "postgresql":
		names = [second._inbox_claim._name(QUEUE, i) for i in ("a-free-id", ids[0], ids[-1])]
		with second.engine.connect() as db:
			used = db.exec_driver_sql(
				"SELECT " + ", ".join(["IS_USED_LOCK(%s)"] * len(names)), tuple(names)
			).one()
		assert list(used) == [None, None, None]
