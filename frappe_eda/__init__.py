"""frappe_eda: event-driven messaging over RabbitMQ for Frappe sites and plain Python services."""

from typing import Any

__version__ = "0.1.0"


def publish(message_type: str, payload: Any = None, **options: Any) -> Any:
	"""Inside a Frappe site: queue a message in the current transaction's outbox.

	Outside Frappe use ``frappe_eda.messaging.Publisher``. See ``frappe_eda.outbox.publish`` for
	the options (``to=`` a destination, ``exchange``, ``routing_key``, ``reference_doctype``, ...).
	"""
	from frappe_eda.outbox import publish as publish_in_site

	return publish_in_site(message_type, payload, **options)
