"""Failure notices: grouped by fingerprint so an outage is one alert, robust, and free of payloads."""

from __future__ import annotations

import logging

import pytest

from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.notify import (
	DEAD_LETTERED,
	PUBLISH_FAILED,
	FailureNotice,
	FanoutNotifier,
	LoggingNotifier,
	RateLimitedNotifier,
	build_notifier,
)
from frappe_eda.messaging.processing import Delivery, DeliveryProcessor, Outcome
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.stores.memory import MemoryStore


class Clock:
	def __init__(self) -> None:
		self.now = 1000.0

	def __call__(self) -> float:
		return self.now


class Recorder:
	def __init__(self) -> None:
		self.notices: list[FailureNotice] = []

	def notify(self, notice: FailureNotice) -> None:
		self.notices.append(notice)


def notice(fingerprint: str = "fp-1", message_id: str = "m-1", kind: str = DEAD_LETTERED) -> FailureNotice:
	return FailureNotice(
		kind=kind,
		message_id=message_id,
		routing_key="order.created",
		exception_type="RuntimeError",
		error="warehouse down",
		fingerprint=fingerprint,
		queue="inventory",
		handler="shop.reserve",
	)


@pytest.fixture
def clock() -> Clock:
	return Clock()


@pytest.fixture
def recorder() -> Recorder:
	return Recorder()


@pytest.fixture
def limiter(recorder: Recorder, clock: Clock) -> RateLimitedNotifier:
	return RateLimitedNotifier(recorder, window_seconds=300, clock=clock)


def test_a_thousand_identical_failures_make_one_notice_then_one_with_the_count(
	limiter: RateLimitedNotifier, recorder: Recorder, clock: Clock
) -> None:
	for n in range(1000):
		limiter.notify(notice(message_id=f"m-{n}"))
		clock.now += 0.1  # 100 s in all: inside the window
	assert [(n.message_id, n.suppressed) for n in recorder.notices] == [("m-0", 0)]

	clock.now += 200.1  # the window has passed
	limiter.notify(notice(message_id="m-late"))

	assert [(n.message_id, n.suppressed) for n in recorder.notices] == [("m-0", 0), ("m-late", 999)]
	assert recorder.notices[-1].summary().endswith("(+999 more like it)")


def test_the_window_starts_again_after_each_notice_that_passes(
	limiter: RateLimitedNotifier, recorder: Recorder, clock: Clock
) -> None:
	limiter.notify(notice())
	clock.now += 301
	limiter.notify(notice())
	limiter.notify(notice())
	clock.now += 299
	limiter.notify(notice())
	assert [n.suppressed for n in recorder.notices] == [0, 0]


def test_different_fingerprints_and_kinds_are_not_grouped(
	limiter: RateLimitedNotifier, recorder: Recorder
) -> None:
	for fingerprint in ("fp-1", "fp-2", "fp-1", "fp-3", "fp-2"):
		limiter.notify(notice(fingerprint))
	limiter.notify(notice("fp-1", kind=PUBLISH_FAILED))
	assert [(n.kind, n.fingerprint) for n in recorder.notices] == [
		(DEAD_LETTERED, "fp-1"),
		(DEAD_LETTERED, "fp-2"),
		(DEAD_LETTERED, "fp-3"),
		(PUBLISH_FAILED, "fp-1"),
	]


def test_flush_reports_what_is_still_held_back_once(limiter: RateLimitedNotifier, recorder: Recorder) -> None:
	for fingerprint in ("fp-1", "fp-1", "fp-1", "fp-2"):
		limiter.notify(notice(fingerprint))
	limiter.flush()
	flushed = recorder.notices[2:]
	assert [(n.fingerprint, n.suppressed) for n in flushed] == [("fp-1", 2)]
	limiter.flush()
	assert len(recorder.notices) == 3  # nothing is held back any more


def test_a_flushed_dead_letter_notice_still_names_its_queue_and_error(
	limiter: RateLimitedNotifier, recorder: Recorder
) -> None:
	for n in range(3):
		limiter.notify(notice(message_id=f"m-{n}"))
	limiter.flush()
	flushed = recorder.notices[-1]
	assert (flushed.kind, flushed.queue, flushed.routing_key, flushed.exception_type) == (
		DEAD_LETTERED,
		"inventory",
		"order.created",
		"RuntimeError",
	)
	assert flushed.summary().startswith("[dead_letter] queue inventory, key order.created")


def test_fanout_survives_a_notifier_that_raises(recorder: Recorder, caplog: pytest.LogCaptureFixture) -> None:
	class Broken:
		def notify(self, notice: FailureNotice) -> None:
			raise OSError("smtp down")

	after = Recorder()
	with caplog.at_level(logging.ERROR, logger="frappe_eda.messaging.notify"):
		FanoutNotifier([recorder, Broken(), after]).notify(notice())
	assert (len(recorder.notices), len(after.notices)) == (1, 1)
	assert "notifier Broken failed" in caplog.text and "smtp down" in caplog.text


def test_the_logged_notice_names_ids_and_the_error(caplog: pytest.LogCaptureFixture) -> None:
	with caplog.at_level(logging.ERROR, logger="frappe_eda.failures"):
		LoggingNotifier().notify(notice())
	assert caplog.messages == [
		"[dead_letter] queue inventory, key order.created, message m-1: RuntimeError: warehouse down"
	]


def test_a_dead_letter_notice_never_carries_the_payload(caplog: pytest.LogCaptureFixture) -> None:
	"""Built from a real dead-letter decision, as the worker builds it, then logged."""
	secret = "IBAN DE89 3704 0044 0532 0130 00"

	def reject(message: Message) -> None:
		raise RuntimeError(f"cannot book order {message.id}")

	registry = HandlerRegistry()
	registry.subscribe("order.*", queue="billing", max_attempts=1)(reject)
	message = Message("order.created", {"iban": secret, "customer": "Zoë"})
	delivery = Delivery("billing", "order.created", encode(message), "eda.events")
	[decision] = DeliveryProcessor(registry, MemoryStore()).process([delivery])
	assert decision.outcome is Outcome.DEAD and decision.error is not None
	error = decision.error
	dead = FailureNotice(
		kind=DEAD_LETTERED,
		message_id=error.message_id,
		routing_key=delivery.original_routing_key,
		exception_type=error.exception_type,
		error=error.error,
		fingerprint=error.fingerprint,
		queue=delivery.queue,
		handler=decision.handler,
	)

	with caplog.at_level(logging.ERROR, logger="frappe_eda.failures"):
		LoggingNotifier().notify(dead)

	assert message.id in caplog.text and "cannot book order" in caplog.text
	assert secret not in caplog.text and "Zoë" not in caplog.text
	assert secret not in repr(dead)


def test_the_built_notifier_logs_behind_one_rate_limit(caplog: pytest.LogCaptureFixture) -> None:
	extra = Recorder()
	notifier = build_notifier(extra=[extra], window_seconds=300)
	with caplog.at_level(logging.ERROR, logger="frappe_eda.failures"):
		for n in range(5):
			notifier.notify(notice(message_id=f"m-{n}"))
	assert len(extra.notices) == 1 and len(caplog.messages) == 1


def test_the_same_bad_input_on_two_queues_is_two_groups(
	limiter: RateLimitedNotifier, recorder: Recorder
) -> None:
	from dataclasses import replace

	bad_json = replace(notice(fingerprint="InvalidJson"), queue="billing")
	for _ in range(50):
		limiter.notify(bad_json)
		limiter.notify(replace(bad_json, queue="inventory"))
	assert sorted(n.queue for n in recorder.notices) == ["billing", "inventory"]
