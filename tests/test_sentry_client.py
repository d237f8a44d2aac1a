"""SentryNotifier with a DSN: one client per process, set up to send our notices and nothing else."""

from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.transport import Transport

from frappe_eda.messaging.notify import FailureNotice, SentryNotifier, sentry_client

DSN = "https://key@sentry.invalid/1"


class Captured(Transport):
	def __init__(self) -> None:
		super().__init__({"dsn": DSN})
		self.envelopes: list[Any] = []

	def capture_envelope(self, envelope: Any) -> None:
		self.envelopes.append(envelope)

	def capture_event(self, event: Any) -> None:  # sentry-sdk 1.x sends events without an envelope
		self.envelopes.append(event)

	def events(self) -> list[dict[str, Any]]:
		found = []
		for sent in self.envelopes:
			if isinstance(sent, dict):
				found.append(sent)
			else:
				found += [item.payload.json for item in sent.items if item.type == "event"]
		return found


def notice(**changes: Any) -> FailureNotice:
	values: dict[str, Any] = dict(
		kind="dead_letter",
		message_id="m-1",
		routing_key="sales_order.submitted",
		exception_type="RuntimeError",
		error="warehouse down",
		fingerprint="abc123",
		queue="inventory",
	)
	values.update(changes)
	return FailureNotice(**values)


def test_notices_go_through_one_client_per_process_that_sends_nothing_else() -> None:
	transport = Captured()
	first = SentryNotifier(DSN, environment="site-1", transport=transport)
	second = SentryNotifier(DSN, environment="site-1", transport=transport)
	assert first._client is second._client is sentry_client(DSN, "site-1", transport)

	client = first._client
	for option in ("default_integrations", "auto_enabling_integrations", "include_local_variables"):
		assert client.options[option] is False, option
	assert client.options["max_request_body_size"] == "never"
	assert not client.integrations  # no logging, threading or excepthook hooks installed

	first.notify(notice())
	client.flush(timeout=5)
	[event] = transport.events()
	assert event["fingerprint"] == ["frappe_eda", "dead_letter", "abc123"]
	assert event["tags"]["eda.queue"] == "inventory"
	assert event["environment"] == "site-1"
	assert "warehouse down" in event["message"]
	assert "payload" not in str(event)
	assert "exception" not in event and "threads" not in event  # no stack, no frame locals


def current_client() -> Any:
	return sentry_sdk.get_client() if hasattr(sentry_sdk, "get_client") else sentry_sdk.Hub.current.client


def test_the_hosts_own_sentry_is_left_alone() -> None:
	hosts = Captured()
	sentry_sdk.init(dsn="https://host@sentry.invalid/2", transport=hosts, default_integrations=False)
	try:
		before = current_client()
		ours = Captured()
		SentryNotifier(DSN, transport=ours).notify(notice())
		sentry_client(DSN, None, ours).flush(timeout=5)
		assert current_client() is before
		sentry_sdk.flush()
	finally:
		sentry_sdk.init(dsn=None)
	assert len(ours.events()) == 1
	assert hosts.events() == []
