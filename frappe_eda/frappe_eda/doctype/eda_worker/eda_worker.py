# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

from frappe.model.document import Document


class EDAWorker(Document):
	"""One run of ``bench eda worker``, written by its heartbeat (frappe_eda.consumer.heartbeats) with
	raw queries on a connection of its own; read in the desk and by frappe_eda.desk.broker_view."""
