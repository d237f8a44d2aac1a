# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

from datetime import datetime, timedelta, timezone

import frappe
from frappe.model.document import Document


class EDAReceipt(Document):
	"""What a subscribing server did with a message this site sent; written by
	frappe_eda.replication.receipts.record_receipt with raw writes, read in the desk."""

	@staticmethod
	def clear_old_logs(days=30):
		"""Receipts received over ``days`` ago, and those whose EDA Message retention deleted."""
		before = (datetime.now(timezone.utc) - timedelta(days=int(days))).replace(tzinfo=None)
		receipt, message = frappe.qb.DocType("EDA Receipt"), frappe.qb.DocType("EDA Message")
		frappe.qb.from_(receipt).delete().where(receipt.received_at < before).run()
		messages = frappe.qb.from_(message).select(message.name)
		frappe.qb.from_(receipt).delete().where(receipt.eda_message.notin(messages)).run()
