"""frappe_eda: event-driven messaging over RabbitMQ for Frappe sites and plain Python services."""

__version__ = "0.1.0"
