"""Telling the EDA Managers of a site: the desk bell at once, an email digest each hour, and Sentry.

The bell (Notification Log) goes to every enabled user with the configured role, rate-limited per
failure fingerprint by the core's ``RateLimitedNotifier``. The digest mails the same people a table
of the last hour's failure groups, so a broker outage is one email, not thousands.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import frappe
from frappe.query_builder.functions import Count, Max, Min

from frappe_eda.messaging.notify import (
	DEAD_LETTERED,
	FailureNotice,
	FanoutNotifier,
	LoggingNotifier,
	Notifier,
	RateLimitedNotifier,
	SentryNotifier,
)


class DeskNotifier:
	def __init__(self, role: str) -> None:
		self.role = role

	def notify(self, notice: FailureNotice) -> None:
		what = "dead-lettered" if notice.kind == DEAD_LETTERED else "could not be published"
		subject = f"EDA: a message {what}: {notice.exception_type.rsplit('.', 1)[-1]}"
		if notice.suppressed:
			subject += f" (+{notice.suppressed} like it)"
		document_name = _message_name(notice)
		for user in managers(self.role):
			log = frappe.new_doc("Notification Log")
			log.update(
				{
					"for_user": user,
					"type": "Alert",
					"subject": subject,
					"email_content": frappe.utils.escape_html(notice.summary()),
					"document_type": "EDA Message" if document_name else None,
					"document_name": document_name,
				}
			)
			log.insert(ignore_permissions=True)
		frappe.db.commit()


def managers(role: str) -> list[str]:
	users = frappe.get_all("Has Role", filters={"role": role, "parenttype": "User"}, pluck="parent")
	return frappe.get_all("User", filters={"name": ["in", users or [""]], "enabled": 1}, pluck="name")


def site_notifier(settings: Any) -> Notifier:
	notifiers: list[Any] = [LoggingNotifier(), DeskNotifier(settings.notify_role)]
	if settings.sentry_dsn:
		notifiers.append(SentryNotifier(settings.sentry_dsn, environment=frappe.local.site))
	return RateLimitedNotifier(FanoutNotifier(notifiers))


def send_failure_digest() -> None:
	"""Hourly scheduler job: one email per manager listing the last hour's failure groups."""
	from frappe_eda.settings import load_settings

	settings = load_settings()
	if not (settings.enabled and settings.notify_email):
		return
	since = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=1)
	groups = failure_groups(since)
	if not groups:
		return
	recipients = [u for u in managers(settings.notify_role) if u not in ("Administrator", "Guest")]
	if not recipients:
		return
	rows = "".join(
		f"<tr><td>{frappe.utils.escape_html(g.exception_type)}</td><td>{g.count}</td>"
		f"<td>{frappe.utils.escape_html(g.queue or '-')}</td><td>{g.first_seen}</td><td>{g.last_seen}</td></tr>"
		for g in groups
	)
	frappe.sendmail(
		recipients=recipients,
		subject=f"EDA: {sum(g.count for g in groups)} failures in {len(groups)} groups in the last hour",
		message=(
			"<p>Failures recorded on this site in the last hour, grouped by fingerprint (times in UTC). "
			"Open EDA Message in the desk to replay them.</p>"
			"<table><tr><th>Error</th><th>Count</th><th>Queue</th><th>First</th><th>Last</th></tr>"
			f"{rows}</table>"
		),
	)


def failure_groups(since: datetime | None = None, resolved: bool = False) -> list[Any]:
	"""Errors grouped by fingerprint: count, first and last time, one sample; newest groups first."""
	error = frappe.qb.DocType("EDA Error")
	query = (
		frappe.qb.from_(error)
		.select(
			error.fingerprint,
			Max(error.exception_type).as_("exception_type"),
			Max(error.queue).as_("queue"),
			Max(error.error).as_("sample_error"),
			Count(error.name).as_("count"),
			Min(error.occurred_at).as_("first_seen"),
			Max(error.occurred_at).as_("last_seen"),
		)
		.where(error.resolved == int(resolved))
		.groupby(error.fingerprint)
		.orderby(Max(error.occurred_at), order=frappe.qb.desc)
	)
	if since is not None:
		query = query.where(error.occurred_at >= since)
	return query.run(as_dict=True)


def _message_name(notice: FailureNotice) -> str | None:
	if not notice.message_id:
		return None
	return frappe.db.get_value(
		"EDA Message", {"message_id": notice.message_id, "queue": notice.queue or ""}, "name"
	)
