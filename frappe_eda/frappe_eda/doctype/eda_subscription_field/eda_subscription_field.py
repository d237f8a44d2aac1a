# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE

from frappe.model.document import Document


class EDASubscriptionField(Document):
	pass
