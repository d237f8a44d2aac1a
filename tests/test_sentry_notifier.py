from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.transport import Transport

from frappe_eda.messaging.notify import FailureNotice, SentryNotifier


class Captured(Transport):
	def __init__(self) -> None:
		super().__init__({"dsn": "https://key@sentry.invalid/1"})
		self.envelopes: list[Any] = []
		self.plain_events: list[dict[str, Any]] = []

	def capture_envelope(self, envelope: Any) -> None:
		self.envelopes.append(envelope)

	def capture_event(self, event: dict[str, Any]) -> None:
		"""sentry-sdk 1.x (Frappe v15 pins ~=1.37) hands events here; 2.x only envelopes."""
		self.plain_events.append(event)

	def events(self) -> list[dict[str, Any]]:
		wrapped = [item.payload.json for env in self.envelopes for item in env.items if item.type == "event"]
		return wrapped + self.plain_events


def test_sentry_events_are_grouped_by_our_fingerprint_and_carry_no_payload() -> None:
	transport = Captured()
	sentry_sdk.init(dsn="https://key@sentry.invalid/1", transport=transport, default_integrations=False)
	try:
		notice = FailureNotice(
			"dead_letter",
			"m-1",
			"sales_order.submitted",
			"RuntimeError",
			"warehouse down",
			"abc123",
			queue="inventory",
		)
		SentryNotifier().notify(notice)
		sentry_sdk.flush()
	finally:
		sentry_sdk.init(dsn=None)
	[event] = transport.events()
	assert event["fingerprint"] == ["frappe_eda", "dead_letter", "abc123"]
	assert event["tags"]["eda.queue"] == "inventory"
	assert "warehouse down" in event["message"]
	assert "payload" not in str(event)
