# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

import math

import frappe
from frappe import _
from frappe.model.document import Document

from frappe_eda.settings import parse_delays


class EDASettings(Document):
	def onload(self):
		from frappe_eda.desk.notifications import recipients_summary

		# Who a failure reaches with the saved Notify Role (eda_settings.js shows it above the form).
		self.set_onload("eda_notified", recipients_summary(self.notify_role or "EDA Manager"))
		from frappe_eda.replication.trust import trust_summary

		self.set_onload("eda_trust", trust_summary())

	def validate(self):
		try:
			delays = parse_delays(self.retry_delays)
		except ValueError:
			frappe.throw(_("Retry Delays must be numbers of seconds separated by commas, e.g. 1,5,30"))
		if not all(math.isfinite(delay) and delay > 0 for delay in delays):
			frappe.throw(_("Retry Delays must be positive numbers of seconds"))
		if (self.max_attempts or 0) < 1:
			frappe.throw(_("Max Attempts counts the first try and must be at least 1"))
		if (self.prefetch or 0) < 1:
			frappe.throw(_("Prefetch must be at least 1"))
		if not self.amqp_url and not 0 < (self.port or 0) < 65536:
			frappe.throw(_("Port must be between 1 and 65535"))
		if (self.retention_days or 0) < 0:
			frappe.throw(_("Retention days cannot be negative"))
		# A Password field: an unchanged value comes back as asterisks (the URL itself is in __Auth).
		if (
			self.amqp_url
			and not self.is_dummy_password(self.amqp_url)
			and not self.amqp_url.startswith(("amqp://", "amqps://"))
		):
			frappe.throw(_("AMQP URL must start with amqp:// or amqps://"))
		if self.queue_type not in ("classic", "quorum"):
			frappe.throw(_("Queue Type must be classic or quorum"))
		self._check_signing_key()

	def _check_signing_key(self):
		"""A new signing key (a Password field: unchanged, it comes back as asterisks) must parse; the
		public key shown beside it follows it."""
		from frappe_eda.messaging.errors import ConfigurationError
		from frappe_eda.messaging.trust import SigningKey

		if not self.signing_key:
			self.public_key = ""
			return
		if self.is_dummy_password(self.signing_key):
			return
		try:
			self.public_key = SigningKey.from_text(self.signing_key).public.text
		except ConfigurationError as e:
			frappe.throw(_("Signing Key: {0}").format(frappe.utils.escape_html(str(e))))
