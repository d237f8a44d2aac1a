"""Whether EDA's tables exist on this site yet, so that EDA's hooks never break anything before they do.

Frappe runs an app's hooks as soon as the app is in the site's installed apps, which can be before the
app's DocTypes are synced: a half-finished ``install-app`` (a module list cached before the app was
added to apps.txt syncs nothing), a restore of a database taken before the install, or the patches of a
``migrate`` that run before the new DocTypes are created. Our ``doc_events["*"]`` hook runs on every
save of every document, and the scheduler calls our jobs every minute: while the tables are missing
they do nothing, and say why once per process, instead of failing a save, a migrate or an install.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import frappe

log = logging.getLogger(__name__)

# The DocTypes the hooks read or write first; the rest come with them in one sync of the app's module.
REQUIRED_DOCTYPES = ("EDA Event Rule", "EDA Message")

_ready_sites: set[str] = set()  # sites seen with their tables; a table once there stays there
_told_sites: set[str] = set()  # sites whose missing tables were logged already (once per process)

F = TypeVar("F", bound=Callable[..., Any])


def eda_tables_exist() -> bool:
	"""True once this site has EDA's tables. Asked only where a hook is about to read them for the
	first time in a while (the rules' cache is empty, a scheduler job starts), never per row."""
	site = getattr(frappe.local, "site", None) or ""
	if site in _ready_sites:
		return True
	# uncached: the list Frappe caches in Redis may be older than a sync that just created them
	missing = [doctype for doctype in REQUIRED_DOCTYPES if not frappe.db.table_exists(doctype, cached=False)]
	if not missing:
		_ready_sites.add(site)
		return True
	if site not in _told_sites:
		_told_sites.add(site)
		reason = (
			f"frappe_eda is installed on {site or 'this site'} but its tables are not there yet "
			f"({', '.join(missing)}): publishing and its scheduled jobs do nothing until "
			"`bench --site SITE migrate` creates them"
		)
		log.warning(reason)
		frappe.logger("frappe_eda").warning(reason)
	return False


def when_installed(job: F) -> F:
	"""A scheduler job that does nothing (and says why once) while EDA's tables are missing."""

	@functools.wraps(job)
	def run(*args: Any, **kwargs: Any) -> Any:
		if not eda_tables_exist():
			return None
		return job(*args, **kwargs)

	return run  # type: ignore[return-value]
