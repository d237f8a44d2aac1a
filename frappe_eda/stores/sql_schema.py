"""The two tables of the SQL store, portable across SQLite, MariaDB/MySQL and PostgreSQL, and how
records map to their rows.

Times are stored as naive UTC with microseconds (MariaDB's DATETIME has no time zone); the zone is put
back on read. Bodies may be megabytes, which MariaDB's TEXT (64 KiB) cannot hold. MariaDB/MySQL tables
use ``utf8mb4_bin``: ids, queues and routing keys are case-sensitive on the broker, and a
case-insensitive collation would merge two keys in the unique index.

``store_limits`` reads what the tables can hold from these columns, so the worker refuses a message the
store could not record before its handler runs (see ``frappe_eda.messaging.storable``).
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
	Boolean,
	Column,
	DateTime,
	Index,
	Integer,
	MetaData,
	String,
	Table,
	Text,
	UniqueConstraint,
)
from sqlalchemy.dialects import mysql

from frappe_eda.messaging.store import MAX_TIME, Direction, ErrorRecord, MessageRecord, Status, StoreLimits

LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
KEY_LENGTH = 255
MYSQL_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
MESSAGE_FIELDS = tuple(f.name for f in fields(MessageRecord))
ERROR_FIELDS = tuple(f.name for f in fields(ErrorRecord))
# MariaDB/MySQL: TEXT holds 65,535 bytes (last_error, error); DATETIME holds years 1000 to 9999.
MYSQL_TEXT_BYTES = 65_535
MYSQL_TEXT_FIELDS = ("last_error", "error")
MYSQL_MIN_TIME = datetime(1000, 1, 1, tzinfo=timezone.utc)
# INTEGER columns (attempts, replay_count): 32 bits on MariaDB and PostgreSQL, 64 on SQLite.
MAX_INT = {"sqlite": 2**63 - 1}
MAX_INT_32 = 2**31 - 1


def build_tables(prefix: str = "eda_") -> tuple[MetaData, Table, Table]:
	metadata = MetaData()
	messages = Table(
		f"{prefix}message",
		metadata,
		Column("id", Integer, primary_key=True, autoincrement=True),
		Column("message_id", String(KEY_LENGTH), nullable=False),
		Column("direction", String(3), nullable=False),
		Column("queue", String(KEY_LENGTH), nullable=False, default=""),
		Column("status", String(16), nullable=False),
		Column("routing_key", String(KEY_LENGTH), nullable=False, default=""),
		Column("exchange", String(KEY_LENGTH), nullable=False, default=""),
		Column("handler", String(KEY_LENGTH), nullable=False, default=""),
		Column("message_type", String(KEY_LENGTH), nullable=False, default=""),
		Column("body", LongText, nullable=False),
		Column("headers", LongText, nullable=False),
		Column("attempts", Integer, nullable=False, default=0),
		Column("last_error", Text, nullable=False, default=""),
		Column("replay_count", Integer, nullable=False, default=0),
		Column("replay_of", String(KEY_LENGTH), nullable=False, default=""),
		Column("resolved", Boolean, nullable=False, default=False),
		Column("reference_doctype", String(140), nullable=False, default=""),
		Column("reference_name", String(KEY_LENGTH), nullable=False, default=""),
		Column("created_at", Timestamp, nullable=False),
		Column("updated_at", Timestamp, nullable=False),
		UniqueConstraint("message_id", "direction", "queue", name=f"{prefix}message_key"),
		Index(f"{prefix}message_status", "direction", "status", "created_at"),
		Index(f"{prefix}message_queue", "queue", "status"),
		Index(f"{prefix}message_routing_key", "routing_key"),
		Index(f"{prefix}message_updated", "updated_at"),
		**MYSQL_OPTIONS,
	)
	errors = Table(
		f"{prefix}error",
		metadata,
		Column("id", Integer, primary_key=True, autoincrement=True),
		Column("message_id", String(KEY_LENGTH), nullable=False),
		Column("direction", String(3), nullable=False),
		Column("queue", String(KEY_LENGTH), nullable=False, default=""),
		Column("handler", String(KEY_LENGTH), nullable=False, default=""),
		Column("exception_type", String(KEY_LENGTH), nullable=False),
		Column("error", Text, nullable=False),
		Column("traceback", LongText, nullable=False),
		Column("fingerprint", String(64), nullable=False),
		Column("attempt", Integer, nullable=False, default=1),
		Column("occurred_at", Timestamp, nullable=False),
		Column("resolved", Boolean, nullable=False, default=False),
		Index(f"{prefix}error_message", "message_id", "queue"),
		Index(f"{prefix}error_fingerprint", "fingerprint"),
		**MYSQL_OPTIONS,
	)
	return metadata, messages, errors


def naive_utc(value: datetime) -> datetime:
	"""Naive input is taken to be UTC already."""
	if value.tzinfo is None:
		return value
	return value.astimezone(timezone.utc).replace(tzinfo=None)


def aware_utc(value: datetime) -> datetime:
	return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# ``Enum.value`` is a descriptor call; a dict lookup is several times cheaper per row.
_VALUES: dict[Any, str] = {member: member.value for kind in (Direction, Status) for member in kind}


def message_row(record: MessageRecord, now: datetime) -> dict[str, Any]:
	row = dict(record.__dict__)  # the dataclass's fields, copied in C (records are built per message)
	row.update(
		direction=_VALUES[record.direction],
		status=_VALUES[record.status],
		headers=json.dumps(record.headers, default=str) if record.headers else "{}",
		created_at=naive_utc(record.created_at),
		updated_at=now,
	)
	return row


def message_record(row: Any) -> MessageRecord:
	values = {name: row[name] for name in MESSAGE_FIELDS}
	values.update(
		direction=Direction(row["direction"]),
		status=Status(row["status"]),
		headers=json.loads(row["headers"] or "{}"),
		resolved=bool(row["resolved"]),
		created_at=aware_utc(row["created_at"]),
		updated_at=aware_utc(row["updated_at"]),
	)
	return MessageRecord(**values)


def error_row(error: ErrorRecord) -> dict[str, Any]:
	row = {name: getattr(error, name) for name in ERROR_FIELDS}
	row.update(direction=error.direction.value, occurred_at=naive_utc(error.occurred_at))
	return row


def error_record(row: Any) -> ErrorRecord:
	values = {name: row[name] for name in ERROR_FIELDS}
	values.update(
		direction=Direction(row["direction"]),
		occurred_at=aware_utc(row["occurred_at"]),
		resolved=bool(row["resolved"]),
	)
	return ErrorRecord(**values)


def store_limits(messages: Table, errors: Table, dialect: str) -> StoreLimits:
	"""What these tables hold: the length of every bounded text column of a record field (the same on
	every dialect, though SQLite does not enforce it, so data moves between databases), and MariaDB's
	TEXT and DATETIME ranges. MariaDB TEXT is counted in UTF-8 bytes (``SqlStore.stored_length``)."""
	record_fields = set(MESSAGE_FIELDS) | set(ERROR_FIELDS)
	key_chars: dict[str, int] = {}
	for table in (messages, errors):
		for column in table.columns:
			length = getattr(column.type, "length", None)
			if column.name in record_fields and isinstance(column.type, String) and length:
				key_chars[column.name] = min(length, key_chars.get(column.name, length))
	mysql_like = dialect in ("mysql", "mariadb")
	return StoreLimits(
		key_chars=key_chars,
		text_chars=dict.fromkeys(MYSQL_TEXT_FIELDS, MYSQL_TEXT_BYTES) if mysql_like else {},
		min_time=MYSQL_MIN_TIME if mysql_like else StoreLimits().min_time,
		max_time=MAX_TIME,
		max_int=MAX_INT.get(dialect, MAX_INT_32),
	)
