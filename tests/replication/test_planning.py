"""Events to actions, and whether a change is applied, skipped (stale, already applied) or a conflict."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frappe_eda.messaging.errors import PermanentFailure
from frappe_eda.messaging.replication.events import ACTIONS, Action, UnknownEvent, action_for, event_of
from frappe_eda.messaging.replication.planning import (
	Applied,
	ConflictPolicy,
	LocalCopy,
	Plan,
	Verdict,
	plan,
)
from frappe_eda.messaging.replication.versions import DocVersion

T0 = datetime(2026, 12, 1, 10, 0, 0)
SECOND = timedelta(seconds=1)
ALL_POLICIES = list(ConflictPolicy)
CREATING = [Action.UPSERT, Action.SUBMIT]
NEEDING_A_COPY = [Action.DELETE, Action.CANCEL, Action.RENAME]


def v(seconds: float = 0, event: str = "on_update") -> DocVersion:
	return DocVersion.of(T0 + timedelta(seconds=seconds), event)


def written(version: DocVersion, local_at: datetime) -> tuple[Applied, LocalCopy]:
	"""What the subscription applied, and the local copy exactly as it left it."""
	return Applied(version, local_modified=local_at), LocalCopy(local_at)


# events


@pytest.mark.parametrize(
	"message_type, action",
	[
		("item.after_insert", Action.UPSERT),
		("item.on_update", Action.UPSERT),
		("item.on_change", Action.UPSERT),
		("sales_invoice.on_update_after_submit", Action.UPSERT),
		("item.backfill", Action.UPSERT),
		("item.reconcile", Action.UPSERT),
		("sales_invoice.on_submit", Action.SUBMIT),
		("sales_invoice.on_cancel", Action.CANCEL),
		("item.on_trash", Action.DELETE),
		("item.after_delete", Action.DELETE),
		("item.after_rename", Action.RENAME),
		("on_update", Action.UPSERT),  # no doctype part
		("a.b.c.on_submit", Action.SUBMIT),  # the event is the last part only
	],
)
def test_action_for_each_event(message_type: str, action: Action) -> None:
	assert action_for(message_type) is action


@pytest.mark.parametrize(
	"message_type",
	[
		"item.validate",
		"item.before_save",
		"item",
		"",
		".",
		"item.",
		"item.ON_UPDATE",
		"item.on_update ",
		"item.on_update\x00",
		"item.on_update.extra",
		"item.__class__",
		"item.\udc80",
		"x" * 100_000,
	],
)
def test_unknown_events_are_refused_for_good(message_type: str) -> None:
	with pytest.raises(UnknownEvent) as caught:
		action_for(message_type)
	assert isinstance(caught.value, PermanentFailure)
	text = str(caught.value)
	assert "on_update" in text and len(text) < 600  # names what is known; a huge type is cut


def test_event_of_is_the_last_dot_part() -> None:
	assert event_of("sales_invoice.on_submit") == "on_submit"
	assert event_of("on_submit") == "on_submit"
	assert event_of("x.") == ""


def test_every_action_is_reachable() -> None:
	assert set(ACTIONS.values()) == set(Action)


# planning: first contact


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("action", CREATING)
def test_a_new_document_is_applied(action: Action, policy: ConflictPolicy) -> None:
	result = plan(action, v(), None, None, policy)
	assert result == Plan(Verdict.APPLY)
	assert result.applies


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("action", NEEDING_A_COPY)
def test_deleting_cancelling_or_renaming_what_is_not_here_is_nothing_to_do(
	action: Action, policy: ConflictPolicy
) -> None:
	result = plan(action, v(event="on_trash"), None, None, policy)
	assert result.verdict is Verdict.NOTHING_TO_DO
	assert not result.applies
	assert "no local copy" in result.reason


@pytest.mark.parametrize("action", NEEDING_A_COPY)
def test_nothing_to_do_also_after_the_copy_went_away(action: Action) -> None:
	applied = Applied(v(0), local_modified=T0)
	assert plan(action, v(5), applied, None, ConflictPolicy.SKIP).verdict is Verdict.NOTHING_TO_DO


@pytest.mark.parametrize("action", CREATING)
def test_a_copy_deleted_by_hand_is_created_again_by_a_newer_change(action: Action) -> None:
	applied = Applied(v(0), local_modified=T0)
	assert plan(action, v(5), applied, None, ConflictPolicy.SKIP).applies


def test_a_document_deleted_by_the_source_comes_back_when_it_is_saved_again() -> None:
	applied = Applied(v(0, "on_trash"), deleted=True)
	assert plan(Action.UPSERT, v(1), applied, None, ConflictPolicy.SKIP).applies


# planning: stale and already applied


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("action", list(Action))
def test_an_older_version_is_stale_whatever_the_copy_and_policy(
	action: Action, policy: ConflictPolicy
) -> None:
	applied, local = written(v(10), T0 + 100 * SECOND)
	for copy in (local, None, LocalCopy(T0 + 500 * SECOND)):
		result = plan(action, v(9), applied, copy, policy)
		assert result.verdict is Verdict.STALE
		assert "2026-12-01 10:00:09.000000 < 2026-12-01 10:00:10.000000" in result.reason


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_the_same_version_is_already_applied(policy: ConflictPolicy) -> None:
	applied, local = written(v(10), T0 + 100 * SECOND)
	for copy in (local, None, LocalCopy(T0 + 500 * SECOND)):
		result = plan(Action.UPSERT, v(10), applied, copy, policy)
		assert result.verdict is Verdict.ALREADY_APPLIED
		assert "applied already" in result.reason


def test_after_insert_then_on_update_of_one_insert_applies_once() -> None:
	first = plan(Action.UPSERT, v(0, "after_insert"), None, None, ConflictPolicy.SKIP)
	assert first.applies
	applied, local = written(v(0, "after_insert"), T0 + SECOND)
	second = plan(Action.UPSERT, v(0, "on_update"), applied, local, ConflictPolicy.SKIP)
	assert second.verdict is Verdict.ALREADY_APPLIED


def test_a_redelivered_update_does_not_bring_back_a_delete_at_the_same_modified() -> None:
	applied = Applied(v(10, "on_trash"), deleted=True)
	result = plan(Action.UPSERT, v(10, "on_update"), applied, None, ConflictPolicy.SOURCE_WINS)
	assert result.verdict is Verdict.STALE
	assert "(delete)" in result.reason


def test_a_delete_after_the_update_it_follows_is_applied() -> None:
	applied, local = written(v(10, "on_update"), T0 + 100 * SECOND)
	assert plan(Action.DELETE, v(10, "on_trash"), applied, local, ConflictPolicy.SKIP).applies


def test_a_rename_at_the_same_modified_is_applied_and_a_replayed_update_then_stale() -> None:
	applied, local = written(v(10, "on_update"), T0 + 100 * SECOND)
	assert plan(Action.RENAME, v(10, "after_rename"), applied, local, ConflictPolicy.SKIP).applies
	renamed, local = written(v(10, "after_rename"), T0 + 100 * SECOND)
	result = plan(Action.UPSERT, v(10, "on_update"), renamed, local, ConflictPolicy.SKIP)
	assert result.verdict is Verdict.STALE
	assert "(rename)" in result.reason


# planning: conflicts


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("action", list(Action))
def test_a_copy_unchanged_since_it_was_written_takes_the_newer_version(
	action: Action, policy: ConflictPolicy
) -> None:
	applied, local = written(v(10), T0 + 100 * SECOND)  # local clock far ahead: does not matter
	assert plan(action, v(11), applied, local, policy).applies


@pytest.mark.parametrize("action", list(Action))
def test_source_wins_over_a_local_change(action: Action) -> None:
	applied = Applied(v(10), local_modified=T0 + 100 * SECOND)
	changed = LocalCopy(T0 + 200 * SECOND)
	assert plan(action, v(11), applied, changed, ConflictPolicy.SOURCE_WINS).applies


def test_newer_modified_wins() -> None:
	applied = Applied(v(10), local_modified=T0 + 20 * SECOND)
	changed = LocalCopy(T0 + 30 * SECOND)
	assert plan(Action.UPSERT, v(31), applied, changed, ConflictPolicy.NEWER_WINS).applies
	kept = plan(Action.UPSERT, v(29), applied, changed, ConflictPolicy.NEWER_WINS)
	assert kept.verdict is Verdict.CONFLICT
	assert "changed at 2026-12-01 10:00:30" in kept.reason and "newer modified wins" in kept.reason
	assert "10:00:29" in kept.reason


def test_newer_modified_wins_keeps_the_local_copy_on_a_tie() -> None:
	applied = Applied(v(10), local_modified=T0 + 20 * SECOND)
	changed = LocalCopy(T0 + 30 * SECOND)
	assert plan(Action.UPSERT, v(30), applied, changed, ConflictPolicy.NEWER_WINS).verdict is Verdict.CONFLICT


@pytest.mark.parametrize("action", list(Action))
def test_skip_and_record_keeps_a_local_change(action: Action) -> None:
	applied = Applied(v(10), local_modified=T0 + 20 * SECOND)
	changed = LocalCopy(T0 + 30 * SECOND)
	result = plan(action, v(1000), applied, changed, ConflictPolicy.SKIP)
	assert result.verdict is Verdict.CONFLICT
	assert not result.applies
	assert "changed at 2026-12-01 10:00:30 since the subscription wrote it" in result.reason
	assert result.reason.endswith("the policy is to skip and record")


def test_a_local_copy_older_than_the_write_is_still_a_local_change() -> None:
	"""Changed means different from what the subscription left, not later (a restored backup)."""
	applied = Applied(v(10), local_modified=T0 + 20 * SECOND)
	restored = LocalCopy(T0 + 5 * SECOND)
	assert plan(Action.UPSERT, v(11), applied, restored, ConflictPolicy.SKIP).verdict is Verdict.CONFLICT
	assert plan(Action.UPSERT, v(11), applied, restored, ConflictPolicy.NEWER_WINS).applies


def test_a_copy_that_existed_before_the_subscription() -> None:
	existing = LocalCopy(T0 + 30 * SECOND)
	assert plan(Action.UPSERT, v(1), None, existing, ConflictPolicy.SOURCE_WINS).applies
	skipped = plan(Action.UPSERT, v(1), None, existing, ConflictPolicy.SKIP)
	assert skipped.verdict is Verdict.CONFLICT
	assert "existed before the subscription wrote it" in skipped.reason
	assert plan(Action.UPSERT, v(31), None, existing, ConflictPolicy.NEWER_WINS).applies
	assert plan(Action.UPSERT, v(29), None, existing, ConflictPolicy.NEWER_WINS).verdict is Verdict.CONFLICT


def test_a_copy_made_here_after_the_source_deleted_it_is_a_local_change() -> None:
	applied = Applied(v(10, "on_trash"), deleted=True)
	made_here = LocalCopy(T0 + 50 * SECOND)
	assert plan(Action.UPSERT, v(20), applied, made_here, ConflictPolicy.SKIP).verdict is Verdict.CONFLICT
	assert plan(Action.UPSERT, v(20), applied, made_here, ConflictPolicy.SOURCE_WINS).applies


def test_an_applied_record_without_the_local_modified_counts_as_changed() -> None:
	applied = Applied(v(10))
	local = LocalCopy(T0 + 50 * SECOND)
	assert plan(Action.UPSERT, v(20), applied, local, ConflictPolicy.SKIP).verdict is Verdict.CONFLICT


def test_docstatus_of_the_copy_does_not_change_the_verdict() -> None:
	applied = Applied(v(10), local_modified=T0 + 20 * SECOND)
	for docstatus in (0, 1, 2):
		assert plan(
			Action.CANCEL, v(11), applied, LocalCopy(T0 + 20 * SECOND, docstatus), ConflictPolicy.SKIP
		).applies


# properties

offsets = st.integers(min_value=-(10**6), max_value=10**6)
event_names = st.sampled_from(
	["on_update", "after_insert", "on_submit", "on_cancel", "on_trash", "after_rename"]
)
maybe_local = st.one_of(
	st.none(), st.builds(LocalCopy, offsets.map(lambda s: T0 + s * SECOND), st.sampled_from([0, 1, 2]))
)
maybe_applied = st.one_of(
	st.none(),
	st.builds(
		Applied,
		st.builds(lambda s, e: v(s, e), offsets, event_names),
		st.booleans(),
		st.one_of(st.none(), offsets.map(lambda s: T0 + s * SECOND)),
	),
)


@settings(derandomize=True, max_examples=60)
@given(
	st.sampled_from(list(Action)),
	offsets,
	event_names,
	maybe_applied,
	maybe_local,
	st.sampled_from(ALL_POLICIES),
)
def test_never_applies_a_version_older_than_or_equal_to_the_applied_one(
	action: Action,
	seconds: int,
	event: str,
	applied: Applied | None,
	local: LocalCopy | None,
	policy: ConflictPolicy,
) -> None:
	incoming = v(seconds, event)
	result = plan(action, incoming, applied, local, policy)
	assert isinstance(result.verdict, Verdict)
	if applied is not None and incoming < applied.version:
		assert result.verdict is Verdict.STALE
	elif applied is not None and incoming == applied.version:
		assert result.verdict is Verdict.ALREADY_APPLIED
	else:
		assert result.verdict not in (Verdict.STALE, Verdict.ALREADY_APPLIED)
	if result.verdict is Verdict.CONFLICT:
		assert local is not None and policy is not ConflictPolicy.SOURCE_WINS and result.reason
	if policy is ConflictPolicy.SOURCE_WINS and result.verdict is not Verdict.APPLY:
		assert result.verdict in (Verdict.STALE, Verdict.ALREADY_APPLIED, Verdict.NOTHING_TO_DO)


@settings(derandomize=True, max_examples=60)
@given(st.lists(st.tuples(offsets, event_names), min_size=1, max_size=12), st.sampled_from(ALL_POLICIES))
def test_applying_in_any_order_ends_at_the_newest_version(
	changes: list[tuple[int, str]], policy: ConflictPolicy
) -> None:
	"""Deliver the changes shuffled (and each twice): the last applied is always the newest one."""
	applied: Applied | None = None
	local: LocalCopy | None = None
	for seconds, event in changes + changes[::-1]:
		incoming = v(seconds, event)
		action = action_for(f"item.{event}")
		result = plan(action, incoming, applied, local, policy)
		if result.applies:
			deleted = action is Action.DELETE
			applied = Applied(
				incoming, deleted=deleted, local_modified=None if deleted else incoming.modified
			)
			local = None if deleted else LocalCopy(incoming.modified)
		elif result.verdict is Verdict.NOTHING_TO_DO:
			applied = Applied(incoming, deleted=True)
	assert applied is not None
	assert applied.version == max(v(s, e) for s, e in changes)
