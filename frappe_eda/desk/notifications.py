"""Telling the EDA Managers of a site: the desk bell at once, an email digest each hour, and Sentry.

The bell (Notification Log) goes to every enabled user with the configured role (EDA Settings' *Notify
Role*, EDA Manager by default), rate-limited per failure fingerprint by the core's
``RateLimitedNotifier``. The digest mails the same people a table of the last hour's failure groups, so
a broker outage is one email, not thousands.

Someone is always told: while no enabled user has that role (a freshly installed site: installing the
app gives the role to nobody), the System Managers are told instead, and each alert says why
(``recipients``). EDA Settings, the workspace's broker view and the worker's start-up line show who
will be told (``recipients_summary``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import frappe
from frappe.query_builder.functions import Count, Max, Min
from frappe.utils import escape_html

from frappe_eda.messaging.notify import (
	DEAD_LETTERED,
	FailureNotice,
	FanoutNotifier,
	LoggingNotifier,
	Notifier,
	RateLimitedNotifier,
	SentryNotifier,
)
from frappe_eda.setup.readiness import when_installed
from frappe_eda.stores.doctype_columns import shown, to_column


class DeskNotifier:
	def __init__(self, role: str) -> None:
		self.role = role

	def notify(self, notice: FailureNotice) -> None:
		what = "dead-lettered" if notice.kind == DEAD_LETTERED else "could not be published"
		# The bell renders the subject as HTML: everything taken from the notice is escaped.
		subject = f"EDA: a message {what}: {escape_html(notice.exception_type.rsplit('.', 1)[-1])}"
		if notice.suppressed:
			subject += f" (+{int(notice.suppressed)} like it)"
		# A fresh snapshot: in the worker the record was committed by the handler thread's connection,
		# which this (loop thread's) older snapshot cannot see, and the bell would lose its link.
		frappe.db.commit()
		document_name = _message_name(notice)
		told = recipients(self.role)
		subject += escape_html(told.because())  # the bell renders HTML; a role name is anyone's text
		for user in told.users:
			log = frappe.new_doc("Notification Log")
			log.update(
				{
					"for_user": user,
					"type": "Alert",
					"subject": subject,
					"email_content": escape_html(notice.summary()),
					"document_type": "EDA Message" if document_name else None,
					"document_name": document_name,
				}
			)
			log.insert(ignore_permissions=True)
		frappe.db.commit()


def managers(role: str) -> list[str]:
	"""The enabled users who have ``role`` (never Guest)."""
	users = frappe.get_all("Has Role", filters={"role": role, "parenttype": "User"}, pluck="parent")
	return frappe.get_all(
		"User", filters={"name": ["in", users or [""]], "enabled": 1}, pluck="name", order_by="name asc"
	)


FALLBACK_ROLE = "System Manager"


@dataclass(frozen=True)
class Recipients:
	"""Who is told of a failure: the notify role's users, or the System Managers when it has none."""

	users: list[str]
	role: str
	fallback: bool  # nobody enabled has ``role``: these are the System Managers

	def because(self) -> str:
		"""What an alert adds to its subject (plain text) when it went to the System Managers instead."""
		if not self.fallback:
			return ""
		return f" (sent to the {FALLBACK_ROLE}s: no enabled user has the role {self.role})"


def recipients(role: str) -> Recipients:
	users = managers(role)
	if users or role == FALLBACK_ROLE:
		return Recipients(users, role, fallback=False)
	return Recipients(managers(FALLBACK_ROLE), role, fallback=True)


def recipients_summary(role: str | None = None) -> dict[str, Any]:
	"""Who a failure reaches now, for the desk and the worker's start-up line: ``{"role", "users",
	"fallback", "message", "warn"}``; ``warn`` when it reaches nobody or only falls back."""
	if role is None:
		from frappe_eda.settings import load_settings

		role = load_settings().notify_role
	told = recipients(role)
	names = ", ".join(told.users)
	if not told.users:
		message = (
			f"Failures reach nobody: no enabled user has the role {role} or {FALLBACK_ROLE}. "
			f"Give someone the role {role}."
		)
	elif told.fallback:
		message = (
			f"No enabled user has the role {role}, so failures are sent to the {FALLBACK_ROLE}s: {names}. "
			f"Give the role {role} to whoever should be told."
		)
	else:
		message = f"Failures are sent to the users with the role {role}: {names}."
	return {
		"role": role,
		"users": told.users,
		"fallback": told.fallback,
		"message": message,
		"warn": told.fallback or not told.users,
	}


# One notifier per process, site and configuration: the worker and every relay drain share it, so its
# rate limit spans them all and Sentry is set up once.
_site_notifiers: dict[tuple[str, str, str | None], Notifier] = {}
_site_notifiers_lock = threading.Lock()


def site_notifier(settings: Any) -> Notifier:
	"""The process's notifier for this site; a changed role or Sentry DSN gets a new one."""
	key = (frappe.local.site, settings.notify_role, settings.sentry_dsn)
	with _site_notifiers_lock:
		notifier = _site_notifiers.get(key)
		if notifier is None:
			notifiers: list[Any] = [LoggingNotifier(), DeskNotifier(settings.notify_role)]
			if settings.sentry_dsn:
				notifiers.append(SentryNotifier(settings.sentry_dsn, environment=frappe.local.site))
			notifier = _site_notifiers[key] = RateLimitedNotifier(FanoutNotifier(notifiers))
	return notifier


@when_installed
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
	told = recipients(settings.notify_role)
	mailed = [u for u in told.users if u not in ("Administrator", "Guest")]
	if not mailed:
		return
	rows = digest_rows(groups)
	frappe.sendmail(
		recipients=mailed,
		subject=(
			f"EDA: {sum(g.count for g in groups)} failures in {len(groups)} groups in the last hour"
			f"{told.because()}"
		),
		message=(
			"<p>Failures recorded on this site in the last hour, grouped by fingerprint (times in UTC). "
			"Open EDA Message in the desk to replay them.</p>"
			"<table><tr><th>Error</th><th>Count</th><th>Queue</th><th>First</th><th>Last</th></tr>"
			f"{rows}</table>"
		),
	)


def digest_rows(groups: list[Any]) -> str:
	"""The digest's table rows. Stored text is already HTML-escaped (doctype_columns); ``shown`` keeps
	rows written before escaping inert too, and escapes nothing twice."""
	return "".join(
		f"<tr><td>{shown(g.exception_type)}</td><td>{int(g.count)}</td>"
		f"<td>{shown(g.queue or '-')}</td><td>{g.first_seen}</td><td>{g.last_seen}</td></tr>"
		for g in groups
	)


def failure_groups(since: datetime | None = None, resolved: bool = False) -> list[Any]:
	"""Errors grouped by fingerprint: count, first and last time, one sample; newest groups first.

	Text comes as stored, HTML-escaped, which is what the report's Data columns need."""
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
		"EDA Message",
		{
			"message_id": to_column("message_id", notice.message_id),
			"queue": to_column("queue", notice.queue or ""),
		},
		"name",
	)
