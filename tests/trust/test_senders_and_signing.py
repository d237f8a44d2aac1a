"""The verified sender of a delivery, signatures and key rings, and a queue's sender policy, without a
broker (the broker's side is in ``test_broker_trust``)."""

from __future__ import annotations

import pytest

from frappe_eda.messaging.envelope import Message, encode
from frappe_eda.messaging.errors import (
	BadSignature,
	ConfigurationError,
	UnprovenSender,
	UnsignedMessage,
	WrongSender,
)
from frappe_eda.messaging.registry import HandlerRegistry
from frappe_eda.messaging.trust import SENDER, SIGNATURE, KeyRing, SenderPolicy, SigningKey, verified_sender
from frappe_eda.testing import TestBroker


def test_the_sender_is_the_validated_user_id_and_the_header_counts_only_on_own_copies() -> None:
	forged = {SENDER: "head"}
	assert verified_sender("wh2", forged, own_user="wh1") == "wh2"  # another user's header is ignored
	assert verified_sender("wh1", forged, own_user="wh1") == "head"  # our own retry or replay
	assert verified_sender("wh1", {}, own_user="wh1") == "wh1"
	assert verified_sender(None, forged, own_user="wh1") == ""
	assert verified_sender("", forged, own_user="wh1") == ""
	assert verified_sender("wh1", {SENDER: 42}, own_user="wh1") == "wh1"


def test_a_key_ring_verifies_each_trusted_key_and_refuses_the_rest() -> None:
	key, rotated, stranger = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
	ring = KeyRing.from_text(f"# head's keys\n{key.public.text}, {rotated.public.text}\n")
	body = encode(Message(type="item.on_update", payload={"name": "ITEM-1"}))
	assert ring.verify(body, key.sign(body)) == key.public.key_id
	assert ring.verify(body, rotated.sign(body)) == rotated.public.key_id
	with pytest.raises(UnsignedMessage):
		ring.verify(body, None)
	with pytest.raises(BadSignature, match="not one of the trusted keys"):
		ring.verify(body, stranger.sign(body))
	with pytest.raises(BadSignature, match="does not match"):
		ring.verify(body + b" ", key.sign(body))
	with pytest.raises(BadSignature, match="does not match"):
		ring.verify(body, key.sign(body)[:-8] + "AAAAAAA=")
	for junk in ("x" * 500, "no-colon", f"{key.public.key_id}:not base64!", 7, b"\xff:\xff"):
		with pytest.raises(BadSignature):
			ring.verify(body, junk)


def test_keys_round_trip_as_text_and_a_signing_key_never_shows_its_secret() -> None:
	key = SigningKey.generate()
	assert SigningKey.from_text(key.text).public == key.public
	assert key.text not in repr(key) and key.text not in str(key)
	assert key.public.key_id in repr(key)
	for bad in (
		"",
		"ed25519:AAAA",
		"rsa:abc",
		"ed25519-private:***",
		key.public.text.replace("ed25519:", "ed25519-private:") + "AA",
	):
		with pytest.raises(ConfigurationError):
			SigningKey.from_text(bad)
	with pytest.raises(ConfigurationError):
		KeyRing.from_text("  \n# nothing\n")
	assert KeyRing.parse_or_none("") is None


def test_a_policy_refuses_each_untrusted_delivery_with_its_own_error() -> None:
	key = SigningKey.generate()
	body = b'{"id":"1"}'
	only_head = SenderPolicy.only(["head"])
	only_head.check("head", body, {})
	with pytest.raises(UnprovenSender, match="only from broker user 'head'"):
		only_head.check("", body, {})
	with pytest.raises(WrongSender, match="although its body says 'head'"):
		only_head.check("wh2", body, {}, claimed="head")
	SenderPolicy.trusted().check("", body, {})  # a trusted network takes anything
	signed = SenderPolicy.trusted(KeyRing([key.public]))
	signed.check("", body, {SIGNATURE: key.sign(body)})  # the signature alone proves it
	with pytest.raises(UnsignedMessage):
		signed.check("head", body, {})


def test_handlers_registered_with_senders_run_only_for_them() -> None:
	registry = HandlerRegistry()
	seen: list[str] = []
	registry.subscribe("order.*", queue="billing", senders="shop")(lambda m: seen.append(m.payload["n"]))
	with TestBroker(registry) as broker:
		broker.publish("order.created", {"n": "from shop"}, sender="shop")
		[refused] = broker.publish("order.created", {"n": "from elsewhere"}, sender="crm")
		[unproven] = broker.publish("order.created", {"n": "unproven"})
	assert seen == ["from shop"]
	assert refused.error is not None and refused.error.exception_type.endswith("WrongSender")
	assert unproven.error is not None and unproven.error.exception_type.endswith("UnprovenSender")
