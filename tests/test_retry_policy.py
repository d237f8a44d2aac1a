"""RetryPolicy: how many tries, how long between them, and which delay queues that takes."""

from __future__ import annotations

import pytest

from frappe_eda.messaging.errors import ConfigurationError
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.retry import DEFAULT_DELAYS, RetryPolicy, tier_name


def test_max_attempts_counts_the_first_try() -> None:
	policy = RetryPolicy(max_attempts=3, delays=(1,))
	assert [policy.should_retry(attempt) for attempt in (1, 2, 3, 4)] == [True, True, False, False]
	assert not RetryPolicy(max_attempts=1, delays=()).should_retry(1)


def test_each_failure_waits_its_delay_and_the_last_delay_repeats() -> None:
	policy = RetryPolicy(max_attempts=6, delays=(1, 10, 60))
	assert [policy.delay_after(attempt) for attempt in range(1, 6)] == [1, 10, 60, 60, 60]


def test_the_defaults_grow_from_a_second_to_ten_minutes() -> None:
	policy = RetryPolicy()
	assert [policy.delay_after(a) for a in range(1, policy.max_attempts)] == [1, 5, 30, 120]
	assert DEFAULT_DELAYS[-1] == 600


def test_tiers_are_the_distinct_delays_actually_used() -> None:
	assert RetryPolicy(max_attempts=5, delays=(1, 10)).tiers() == (1, 10)
	assert RetryPolicy(max_attempts=3, delays=(30, 5, 5, 120)).tiers() == (5, 30)  # 120 is never reached
	assert RetryPolicy(max_attempts=4, delays=(7,)).tiers() == (7,)
	assert RetryPolicy(max_attempts=1, delays=()).tiers() == ()


@pytest.mark.parametrize(
	("kwargs", "text"),
	[
		({"max_attempts": 0}, "max_attempts is 0"),
		({"max_attempts": -3}, "max_attempts is -3"),
		({"max_attempts": 3, "delays": ()}, "at least one delay"),
		({"delays": (1, 0)}, "delays"),
		({"delays": (1, -1)}, "delays"),
		({"delays": (float("nan"),)}, "delays"),
		({"delays": (0.0004,)}, "delays"),  # the broker's TTL is whole milliseconds: this would be 0
	],
)
def test_impossible_policies_are_refused(kwargs: dict, text: str) -> None:
	with pytest.raises(ConfigurationError, match=text):
		RetryPolicy(**kwargs)


def test_a_policy_that_never_retries_needs_no_delays() -> None:
	assert RetryPolicy(max_attempts=1, delays=()).max_attempts == 1


@pytest.mark.parametrize(
	("seconds", "name"),
	[
		(0.001, "1ms"),
		(0.5, "500ms"),
		(1, "1s"),
		(1.25, "1250ms"),
		(90, "90s"),
		(120, "2m"),
		(3600, "1h"),
		(5400, "90m"),
	],
)
def test_tier_names_are_readable_and_stable(seconds: float, name: str) -> None:
	assert tier_name(seconds) == name


def test_every_allowed_delay_gets_a_tier_name_of_its_own_value() -> None:
	for seconds in (0.001, 0.0015, 0.999, 1, 59.5, 61):
		policy = RetryPolicy(max_attempts=2, delays=(seconds,))
		name = tier_name(policy.delay_after(1))
		assert not name.startswith("0"), (seconds, name)


def test_a_queue_can_override_attempts_or_delays_and_keep_the_rest_of_the_defaults() -> None:
	registry = HandlerRegistry()
	registry.subscribe("a", queue="attempts", max_attempts=2)(lambda m: None)
	registry.subscribe("a", queue="delays", retry_delays=[3, 9])(lambda m: None)
	registry.subscribe("a", queue="none")(lambda m: None)
	default = RetryPolicy(max_attempts=9, delays=(4,))

	assert registry.for_queue("attempts").retry == RetryPolicy(max_attempts=2, delays=DEFAULT_DELAYS)
	assert registry.for_queue("delays").retry == RetryPolicy(max_attempts=5, delays=(3, 9))
	assert registry.for_queue("none").retry is None
	assert registry.for_queue("none").retry_policy(default) is default
	assert registry.for_queue("delays").retry_policy(default).delays == (3, 9)


def test_an_impossible_override_fails_at_registration() -> None:
	with pytest.raises(ConfigurationError):
		HandlerRegistry().subscribe("a", queue="q", max_attempts=3, retry_delays=())
