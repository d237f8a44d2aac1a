"""``publish(wait=False)`` costs one durable statement per call on MariaDB and PostgreSQL (issue #13).

The call's PENDING row, and the confirms it took in, go to the database as one INSERT on a connection in
autocommit mode: no BEGIN, no UPDATE per confirmed message, no COMMIT round trip. A confirmed message's
row is saved again, PUBLISHED, with that INSERT. Confirms wait for a later call at most
``STATUS_EVERY`` confirms or ``STATUS_AFTER`` seconds, and ``flush()`` writes whatever is left.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from frappe_eda.messaging import publisher as publisher_module
from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.store import Direction, Status
from frappe_eda.messaging.topology import Binding, Exchange, Queue, Topology, TopologyDeclarer
from frappe_eda.stores.sql import SqlStore
from tests.stores.test_sql_store import round_trips


@pytest.fixture
def publishing(amqp_url: str, unique_name: str) -> Iterator[tuple[BrokerConnection, str]]:
	connection = BrokerConnection(BrokerSettings(url=amqp_url))
	connection.open()
	exchange = f"{unique_name}.ex"
	topology = Topology(
		(Exchange(exchange),),
		(Queue(f"{unique_name}.q"),),
		(Binding(exchange, f"{unique_name}.q", "order.#"),),
	)
	declarer = TopologyDeclarer(connection)
	declarer.declare(topology)
	yield connection, exchange
	declarer.delete(topology)
	declarer.close()
	connection.close()


def _status(store: SqlStore, message: Message) -> Status:
	record = store.get(message.id, Direction.OUTGOING)
	assert record is not None
	return record.status


@pytest.mark.parametrize("url", ["mariadb", "postgres"], indirect=True)
def test_each_call_is_one_insert_with_the_confirms_it_took_in(
	store: SqlStore, publishing: tuple[BrokerConnection, str], monkeypatch: pytest.MonkeyPatch
) -> None:
	connection, exchange = publishing
	monkeypatch.setattr(publisher_module, "STATUS_AFTER", 0.0)  # every confirm goes with the next call
	publisher = Publisher(connection, store, exchange=exchange)
	sent_wire = round_trips(store)
	sent: list[Message] = []
	for n in range(5):
		sent.append(publisher.publish("order.created", {"n": n}, wait=False))
		connection.sleep(0.2)  # the confirm arrives before the next call takes it in
	writes = [s for s in sent_wire if s.lstrip().upper().startswith(("INSERT", "UPDATE", "BEGIN"))]
	assert len(writes) == 5 and all(s.lstrip().upper().startswith("INSERT") for s in writes), writes
	# Each call's INSERT carried the message before it, PUBLISHED; the last waits for flush().
	assert [_status(store, m) for m in sent] == [Status.PUBLISHED] * 4 + [Status.PENDING]
	publisher.flush()
	assert _status(store, sent[-1]) is Status.PUBLISHED
	publisher.close()


@pytest.mark.parametrize("url", ["sqlite", "mariadb", "postgres"], indirect=True)
def test_confirms_wait_for_a_later_call_no_longer_than_status_after(
	store: SqlStore, publishing: tuple[BrokerConnection, str], monkeypatch: pytest.MonkeyPatch
) -> None:
	connection, exchange = publishing
	monkeypatch.setattr(publisher_module, "STATUS_AFTER", 0.5)
	publisher = Publisher(connection, store, exchange=exchange)
	first = publisher.publish("order.created", {"n": 1}, wait=False)
	connection.sleep(0.2)
	second = publisher.publish("order.created", {"n": 2}, wait=False)  # takes the first confirm in, keeps it
	assert _status(store, first) is Status.PENDING  # never PUBLISHED before the broker said so, nor lost
	connection.sleep(0.6)
	publisher.publish("order.created", {"n": 3}, wait=False)  # the oldest kept confirm is past STATUS_AFTER
	assert (_status(store, first), _status(store, second)) == (Status.PUBLISHED, Status.PUBLISHED)
	publisher.close()
