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
