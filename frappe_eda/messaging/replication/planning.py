"""Whether to apply a change to the local copy, decided from plain values.

Per document the subscriber keeps what it applied last (the source's version, whether it was a delete,
and the local copy's ``modified`` right after it wrote it). With that:

- an older version than the one applied is **stale** and skipped: a late retry or a replay of an old
  message never overwrites a newer state (each message carries the whole document, so the newer one
  already holds everything the older one had);
- the same version is **already applied** (a replay, or ``after_insert`` and ``on_update`` of one insert);
- a copy changed locally since the subscription wrote it is a **conflict**, settled by the policy:
  the source wins; the newer ``modified`` wins; or the change is skipped and recorded.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from frappe_eda.messaging.replication.events import Action
from frappe_eda.messaging.replication.versions import DocVersion


class ConflictPolicy(str, enum.Enum):
	SOURCE_WINS = "Source Wins"
	NEWER_WINS = "Newer Modified Wins"
	SKIP = "Skip and Record"


class Verdict(str, enum.Enum):
	APPLY = "apply"
	STALE = "stale"
	ALREADY_APPLIED = "already applied"
	CONFLICT = "conflict"
	NOTHING_TO_DO = "nothing to do"


@dataclass(frozen=True)
class Applied:
	"""What the subscription applied last to one document (``None`` when it never did)."""

	version: DocVersion
	deleted: bool = False
	local_modified: datetime | None = None


@dataclass(frozen=True)
class LocalCopy:
	"""The local document now (``None`` when there is none)."""

	modified: datetime
	docstatus: int = 0


@dataclass(frozen=True)
class Plan:
	verdict: Verdict
	reason: str = ""

	@property
	def applies(self) -> bool:
		return self.verdict is Verdict.APPLY


def plan(
	action: Action,
	incoming: DocVersion,
	applied: Applied | None,
	local: LocalCopy | None,
	policy: ConflictPolicy,
	repair: bool = False,
) -> Plan:
	"""What to do with a change of version ``incoming`` (see the module).

	``repair``: the source sent the document again because reconciliation found the copies differ (a
	change that bypassed hooks keeps its ``modified``, a copy deleted by hand has none): the same version
	is applied again rather than skipped."""
	if applied is not None:
		if incoming < applied.version:
			return Plan(
				Verdict.STALE,
				f"older than the version applied ({_stamp(incoming)} < {_stamp(applied.version)})",
			)
		if incoming == applied.version and not repair:
			return Plan(Verdict.ALREADY_APPLIED, f"version {_stamp(incoming)} is applied already")
	if local is None:
		if action is Action.DELETE:
			return Plan(Verdict.NOTHING_TO_DO, "no local copy to delete")
		if action is Action.CANCEL:
			return Plan(Verdict.NOTHING_TO_DO, "no local copy to cancel")
		if action is Action.RENAME:
			return Plan(Verdict.NOTHING_TO_DO, "no local copy to rename")
		return Plan(Verdict.APPLY)
	changed_here = applied is None or applied.deleted or applied.local_modified != local.modified
	if not changed_here or policy is ConflictPolicy.SOURCE_WINS:
		return Plan(Verdict.APPLY)
	if policy is ConflictPolicy.NEWER_WINS:
		if incoming.modified > local.modified:
			return Plan(Verdict.APPLY)
		return Plan(
			Verdict.CONFLICT,
			f"the local copy was changed at {local.modified.isoformat(sep=' ')}, after the source's "
			f"change at {incoming.modified.isoformat(sep=' ')}; newer modified wins, so it was kept",
		)
	what = (
		"the local copy existed before the subscription wrote it"
		if applied is None
		else (
			f"the local copy was changed at {local.modified.isoformat(sep=' ')} since the subscription wrote it"
		)
	)
	return Plan(Verdict.CONFLICT, f"{what}; the policy is to skip and record")


def _stamp(version: DocVersion) -> str:
	suffix = {1: " (rename)", 2: " (delete)"}.get(version.rank, "")
	return version.modified.isoformat(sep=" ", timespec="microseconds") + suffix
