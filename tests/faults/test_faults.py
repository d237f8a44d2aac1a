"""The short profile of the fault suite (the README's test command runs it; ``python -m tests.faults``
runs the full profile and writes docs/reliability.md)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from frappe_eda.messaging.store import Direction, MessageFilter
from frappe_eda.stores import open_store
from tests.faults import scenarios
from tests.faults.harness import FaultLab

pytestmark = pytest.mark.faults
COUNT = 200


@pytest.fixture
def lab(tmp_path: Path, vhost: str):
	lab = FaultLab(tmp_path, vhost)
	yield lab
	lab.close()


def test_broker_restart_loses_nothing(lab: FaultLab) -> None:
	scenarios.broker_restart(lab, COUNT).check(expected_dead=0)


def test_connection_cut_by_the_broker_loses_nothing(lab: FaultLab) -> None:
	scenarios.connection_cut(lab, COUNT).check(expected_dead=0)


def test_worker_killed_in_a_handler_processes_the_message_once_after_restart(lab: FaultLab) -> None:
	scenarios.kill_in_handler(lab, COUNT).check(expected_dead=0)


def test_worker_killed_before_the_ack_detects_the_redelivery_as_duplicate(lab: FaultLab) -> None:
	scenarios.kill_before_ack(lab, COUNT).check(expected_dead=0)


def test_database_outage_acks_nothing_unrecorded_and_resumes(tmp_path: Path, vhost: str) -> None:
	scenarios.database_unavailable(lambda url: FaultLab(tmp_path, vhost, url), tmp_path, COUNT).check(
		expected_dead=0
	)


def test_transient_failures_recover_and_permanent_ones_are_dead(lab: FaultLab) -> None:
	outcome, expected_dead = scenarios.handler_failures(lab, COUNT)
	outcome.check(expected_dead=expected_dead)


def test_poison_input_is_dead_lettered_with_its_own_error_while_good_messages_flow(lab: FaultLab) -> None:
	outcome, expected_dead = scenarios.poison(lab, COUNT)
	outcome.check(expected_dead=expected_dead)
	store = open_store(lab.store_url)
	dead = store.find(MessageFilter(direction=Direction.INCOMING, queue=lab.queue, limit=1000))
	kinds = Counter(
		e.exception_type.rsplit(".", 1)[-1] for r in dead for e in store.errors(r.message_id, lab.queue)
	)
	store.close()
	for kind in (
		"InvalidJson",
		"InvalidEncoding",
		"EmptyBody",
		"MessageTooLarge",
		"MissingMessageId",
		"DuplicateKey",
		"UnsupportedContentType",
		"InvalidHeader",
		"NestingTooDeep",
		"UnknownMessageType",
	):
		assert kinds[kind] == 1, (kind, kinds)


def test_handlers_that_commit_or_roll_back_are_recorded_and_nothing_runs_twice(lab: FaultLab) -> None:
	outcome, expected_dead = scenarios.handlers_that_end_the_transaction(lab, COUNT)
	outcome.check(expected_dead)


def test_messages_the_store_refuses_are_dead_alone_while_good_ones_flow(lab: FaultLab) -> None:
	outcome, expected_dead = scenarios.store_refuses(lab, COUNT)
	outcome.check(expected_dead=expected_dead)


def test_hostile_strings_are_processed_once_and_stored_byte_for_byte(lab: FaultLab) -> None:
	outcome, expected_dead = scenarios.hostile_strings(lab, COUNT)
	outcome.check(expected_dead)


def test_refused_publishes_are_failed_never_sent(lab: FaultLab) -> None:
	scenarios.publish_refused(lab).check()


def test_backlog_drained_across_two_restarts(lab: FaultLab) -> None:
	scenarios.backlog_with_restarts(lab, 500).check(expected_dead=0)


def test_the_broker_password_appears_in_no_record_and_no_log(lab: FaultLab) -> None:
	scenarios.handler_failures(lab, 60)
	assert lab.secrets_found() == []
	assert lab.logs and all(log.stat().st_size > 0 for log in lab.logs)


def test_concurrent_relays_send_each_outbox_row_once_and_in_order(lab: FaultLab) -> None:
	scenarios.concurrent_relays(lab, COUNT * 5).check(expected_dead=0)
