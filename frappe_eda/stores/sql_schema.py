"""The two tables of the SQL store, portable across SQLite, MariaDB/MySQL and PostgreSQL.

Times are stored as naive UTC with microseconds (MariaDB's DATETIME has no time zone); the store puts
the zone back on read. Bodies may be megabytes, which MariaDB's TEXT (64 KiB) cannot hold.
"""

from __future__ import annotations

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

LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
KEY_LENGTH = 255


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
	)
	return metadata, messages, errors
