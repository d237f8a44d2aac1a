"""RetryPolicy, the registry and the rate-limited notifiers: small rules with big consequences."""

from __future__ import annotations

import logging

import pytest

from frappe_eda.messaging.errors import ConfigurationError, DuplicateSubscription
from frappe_eda.messaging.notify import FailureNotice, FanoutNotifier, LoggingNotifier, RateLimitedNotifier
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.retry import RetryPolicy, tier_name


def test_retry_policy_counts_the_first_try_and_repeats_the_last_delay() -> None:
	policy = RetryPolicy(max_attempts=5, delays=(1, 10))
	assert [policy.should_retry(a) for a in (1, 4, 5)] == [True, True, False]
	assert [policy.delay_after(a) for a in (1, 2, 3, 4)] == [1, 10, 10, 10]
	assert policy.tiers() == (1, 10)
	assert RetryPolicy(max_attempts=1, delays=()).tiers() == ()


@pytest.mark.parametrize(
	"kwargs", [{"max_attempts": 0}, {"max_attempts": 3, "delays": ()}, {"delays": (1, -1)}]
)
def test_impossible_retry_policies_are_refused(kwargs: dict) -> None:
	with pytest.raises(ConfigurationError):
		RetryPolicy(**kwargs)


def test_tier_names_are_readable() -> None:
	assert [tier_name(d) for d in (0.5, 1, 90, 120, 3600, 1.25)] == [
		"500ms",
		"1s",
		"90s",
		"2m",
		"1h",
		"1250ms",
	]


def test_registry_keeps_one_handler_per_queue() -> None:
	registry = HandlerRegistry()

	@registry.subscribe("a.*", queue="q")
	def first(message):
		return None

	def second(message):
		return None

	with pytest.raises(DuplicateSubscription, match="needs a queue of its own"):
		registry.subscribe("b.*", queue="q")(second)
	assert registry.for_queue("q").handler is first
	with pytest.raises(ConfigurationError, match="no handler is registered for queue 'nope'"):
		registry.select(["nope"])


def test_subscription_accepts_keys_by_exchange_type() -> None:
	registry = HandlerRegistry()
	registry.subscribe(["a.*", "b.#"], queue="topic")(lambda m: None)
	registry.subscribe("exact", queue="direct", exchange_type="direct")(lambda m: None)
	registry.subscribe("", queue="fanout", exchange_type="fanout")(lambda m: None)
	assert [registry.for_queue("topic").accepts(k) for k in ("a.x", "b", "b.c.d", "a.x.y")] == [
		True,
		True,
		True,
		False,
	]
	assert [registry.for_queue("direct").accepts(k) for k in ("exact", "exact.no")] == [True, False]
	assert registry.for_queue("fanout").accepts("anything")


def notice(fingerprint: str = "fp1", message_id: str = "m") -> FailureNotice:
	return FailureNotice("dead_letter", message_id, "a.b", "RuntimeError", "boom", fingerprint, queue="q")


class Recorder:
	def __init__(self) -> None:
		self.notices: list[FailureNotice] = []

	def notify(self, notice: FailureNotice) -> None:
		self.notices.append(notice)


def test_a_thousand_identical_failures_send_one_notice_per_window() -> None:
	now = [0.0]
	recorder = Recorder()
	limiter = RateLimitedNotifier(recorder, window_seconds=300, clock=lambda: now[0])
	for n in range(1000):
		limiter.notify(notice(message_id=f"m{n}"))
	assert len(recorder.notices) == 1
	now[0] = 301
	limiter.notify(notice(message_id="late"))
	assert [n.suppressed for n in recorder.notices] == [0, 999]


def test_different_fingerprints_are_not_grouped_and_flush_reports_the_rest() -> None:
	recorder = Recorder()
	limiter = RateLimitedNotifier(recorder, window_seconds=300, clock=lambda: 0.0)
	for fp in ("a", "b", "a", "a"):
		limiter.notify(notice(fp))
	assert [n.fingerprint for n in recorder.notices] == ["a", "b"]
	limiter.flush()
	assert (recorder.notices[-1].fingerprint, recorder.notices[-1].suppressed) == ("a", 2)


def test_one_failing_notifier_does_not_silence_the_others() -> None:
	class Broken:
		def notify(self, notice: FailureNotice) -> None:
			raise OSError("smtp down")

	recorder = Recorder()
	FanoutNotifier([Broken(), recorder]).notify(notice())
	assert len(recorder.notices) == 1


def test_logged_notices_carry_ids_and_errors_not_payloads(caplog: pytest.LogCaptureFixture) -> None:
	with caplog.at_level(logging.ERROR):
		LoggingNotifier().notify(notice())
	assert "queue q, key a.b, message m: RuntimeError: boom" in caplog.text
