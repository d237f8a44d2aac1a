# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import frappe
from frappe import _
from frappe.model.document import Document

from frappe_eda.settings import parse_delays


class EDASettings(Document):
	def validate(self):
		try:
			delays = parse_delays(self.retry_delays)
		except ValueError:
			frappe.throw(_("Retry Delays must be numbers of seconds separated by commas, e.g. 1,5,30"))
		if any(delay <= 0 for delay in delays):
			frappe.throw(_("Retry Delays must be positive"))
		if (self.max_attempts or 0) < 1:
			frappe.throw(_("Max Attempts counts the first try and must be at least 1"))
		if (self.prefetch or 0) < 1:
			frappe.throw(_("Prefetch must be at least 1"))
		if self.amqp_url and not self.amqp_url.startswith(("amqp://", "amqps://")):
			frappe.throw(_("AMQP URL must start with amqp:// or amqps://"))
		if self.queue_type not in ("classic", "quorum"):
			frappe.throw(_("Queue Type must be classic or quorum"))
