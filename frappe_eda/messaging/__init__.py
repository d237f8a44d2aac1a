"""The framework-agnostic core: what a message is and how it moves. Never imports frappe."""

from frappe_eda.messaging.connection import BrokerConnection, BrokerSettings, TlsOptions
from frappe_eda.messaging.consumer import Worker, WorkerOptions
from frappe_eda.messaging.context import current_context
from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import PermanentFailure
from frappe_eda.messaging.heartbeat import WorkerBeat
from frappe_eda.messaging.outbox import OutboxRelay
from frappe_eda.messaging.publisher import Publisher
from frappe_eda.messaging.registry import HandlerRegistry, subscribe
from frappe_eda.messaging.replay import Replayer
from frappe_eda.messaging.retry import RetryPolicy
from frappe_eda.messaging.schema import SchemaRegistry

__all__ = [
	"BrokerConnection",
	"BrokerSettings",
	"HandlerRegistry",
	"Message",
	"OutboxRelay",
	"PermanentFailure",
	"Publisher",
	"Replayer",
	"RetryPolicy",
	"SchemaRegistry",
	"TlsOptions",
	"Worker",
	"WorkerBeat",
	"WorkerOptions",
	"current_context",
	"subscribe",
]
