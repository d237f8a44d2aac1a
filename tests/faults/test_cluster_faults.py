"""The short profile of the cluster fault scenarios: a three-node cluster the session starts and
removes itself, quorum queues, two producers of 200 messages each, three workers (``python -m
tests.faults`` runs them with thousands and writes docs/reliability.md). Every row must show 0 lost,
0 twice and 0 refused (messages left FAILED in the producers' store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import cluster_scenarios
from tests.faults.cluster import RabbitCluster

pytestmark = pytest.mark.faults
COUNT = 200  # per producer
# The one-at-a-time producers run at 150 messages a second: enough for the leader's loss to land in the
# middle of the stream.
STEADY_COUNT = 450


def test_sigkill_of_the_queue_leaders_node_loses_nothing(
	rabbit_cluster: RabbitCluster, tmp_path: Path
) -> None:
	cluster_scenarios.leader_killed(rabbit_cluster, tmp_path, COUNT).check(expected_dead=0)


def test_sigkill_of_a_workers_node_moves_it_to_another_node(
	rabbit_cluster: RabbitCluster, tmp_path: Path
) -> None:
	cluster_scenarios.worker_node_killed(rabbit_cluster, tmp_path, COUNT).check(expected_dead=0)


def test_a_node_stopped_and_started_loses_nothing(rabbit_cluster: RabbitCluster, tmp_path: Path) -> None:
	cluster_scenarios.node_stopped_and_started(rabbit_cluster, tmp_path, COUNT).check(expected_dead=0)


def test_a_rolling_restart_of_all_nodes_loses_nothing(rabbit_cluster: RabbitCluster, tmp_path: Path) -> None:
	cluster_scenarios.rolling_restart(rabbit_cluster, tmp_path, COUNT).check(expected_dead=0)


def test_competing_workers_killed_during_the_drain_apply_each_message_once(
	rabbit_cluster: RabbitCluster, tmp_path: Path
) -> None:
	cluster_scenarios.workers_killed(rabbit_cluster, tmp_path, COUNT).check(expected_dead=0)


def test_a_producers_node_lost_before_the_confirm_sends_each_message_once(
	rabbit_cluster: RabbitCluster, tmp_path: Path
) -> None:
	cluster_scenarios.producer_node_lost(rabbit_cluster, tmp_path, COUNT).check(expected_dead=0)


def test_the_leaders_node_lost_under_one_at_a_time_publishing_refuses_nothing(
	rabbit_cluster: RabbitCluster, tmp_path: Path
) -> None:
	outcome = cluster_scenarios.leader_lost_under_steady_publish(rabbit_cluster, tmp_path, STEADY_COUNT)
	outcome.check(expected_dead=0)
	assert outcome.refused == 0


def test_the_leaders_node_lost_while_the_outbox_relays_refuses_nothing(
	rabbit_cluster: RabbitCluster, tmp_path: Path
) -> None:
	outcome = cluster_scenarios.leader_lost_under_outbox_relay(rabbit_cluster, tmp_path, STEADY_COUNT)
	outcome.check(expected_dead=0)
	assert outcome.refused == 0
