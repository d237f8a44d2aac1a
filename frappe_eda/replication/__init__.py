"""No-code replication: EDA Subscriptions apply the documents other servers publish.

- ``subscriptions``: enabled EDA Subscriptions as the worker's handlers, re-read when one changes.
- ``apply``: one message applied to the local copy (create, update, submit, cancel, delete), with its
  mapping, links, order and conflict policy (the decisions are ``frappe_eda.messaging.replication``'s).
- ``replicas``: what each subscription applied last per source document (EDA Replica).
- ``receipts``: receipts sent back to the source, and recorded there on its EDA Messages.
- ``backfill``: ``bench eda backfill``, existing documents through the outbox.
"""

# The handler name of an EDA Subscription in the worker's registry, its inbox and its EDA Errors.
SUBSCRIPTION_HANDLER_PREFIX = "eda_subscription:"


def subscription_handler_name(subscription: str) -> str:
	return SUBSCRIPTION_HANDLER_PREFIX + subscription


# What no subscription writes, neither as its local DocType nor as a linked document a source sent along
# (Create From Sent Documents): who may log in and with which roles, permissions, the schema and files
# are each server's own; a source that could send them could make itself an administrator here.
NEVER_WRITTEN = frozenset(
	{
		"DocType",
		"User",
		"Role",
		"Role Profile",
		"Has Role",
		"DocPerm",
		"Custom DocPerm",
		"User Permission",
		"Module Def",
		"Module Profile",
		"File",
		"Custom Field",
		"Property Setter",
		"Server Script",
		"Client Script",
		"System Settings",
	}
)
