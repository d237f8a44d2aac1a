# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Written by the worker (frappe_eda.replication.replicas); read only in the desk."""

from frappe.model.document import Document


class EDAReplica(Document):
	pass
