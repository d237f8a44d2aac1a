"""Trust between servers arrived: a new EDA Subscription requires a proven sender (the source's own
broker user). A network that existed before shares one broker user, so its subscriptions would refuse
every message: they keep working as "Trusted Network", and so do receipts and reconciliation requests
on a site that already replicates. The worker, EDA Settings and ``eda status`` warn until the network
moves to one broker user per server (README, "Security model")."""

import frappe

from frappe_eda.replication.subscriptions import TRUSTED


def execute() -> None:
	subscriptions = frappe.get_all("EDA Subscription", pluck="name")
	for name in subscriptions:
		frappe.db.set_value("EDA Subscription", name, "sender_check", TRUSTED, update_modified=False)
	if subscriptions or frappe.db.count("EDA Destination"):
		frappe.db.set_single_value("EDA Settings", "trusted_network", 1)
