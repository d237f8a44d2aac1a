"""Which server a message is for (eda-to), where it started (eda-origin), where receipts go (eda-reply-to)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frappe_eda.messaging.errors import PermanentFailure
from frappe_eda.messaging.replication.addressing import (
	MAX_SERVER_NAME,
	ORIGIN,
	RECEIPT_PREFIX,
	REPLY_TO,
	TO,
	NotAddressedHere,
	addressed_to,
	check_addressed,
	is_echo,
	origin_of,
	receipt_key,
	receipt_key_for,
)

HERE = "wh1.example.com"


def test_header_names() -> None:
	assert (TO, ORIGIN, REPLY_TO, RECEIPT_PREFIX) == ("eda-to", "eda-origin", "eda-reply-to", "eda.receipt.")


# eda-to


@pytest.mark.parametrize(
	"value, expected",
	[
		("wh1", ["wh1"]),
		("  wh1 ", ["wh1"]),
		(["wh1", "wh2"], ["wh1", "wh2"]),
		([" wh1", "", "  ", None, 3, ["wh2"], {"x": 1}, "wh3"], ["wh1", "wh3"]),
		("", []),
		("   ", []),
		([], []),
		(None, []),
		(5, []),
		(True, []),
		({"wh1": True}, []),
		(("wh1",), []),  # JSON has no tuples; only lists count
		(b"wh1", []),
	],
)
def test_addressed_to(value: object, expected: list[str]) -> None:
	assert addressed_to({TO: value}) == expected


def test_no_header_is_no_address() -> None:
	assert addressed_to({}) == []
	check_addressed({}, HERE)
	check_addressed({TO: None}, HERE)
	check_addressed({TO: [None, 3]}, HERE)  # nothing usable: for no server in particular


def test_a_message_for_this_server_or_among_others_passes() -> None:
	check_addressed({TO: HERE}, HERE)
	check_addressed({TO: ["wh2", HERE]}, HERE)
	check_addressed({TO: [f" {HERE}\t"]}, HERE)


@pytest.mark.parametrize(
	"value", ["wh2", ["wh2", "wh3"], HERE.upper(), HERE + ".evil", HERE[:-1], [HERE + "\x00"]]
)
def test_a_message_for_other_servers_is_refused_for_good(value: object) -> None:
	with pytest.raises(NotAddressedHere) as caught:
		check_addressed({TO: value}, HERE)
	assert isinstance(caught.value, PermanentFailure)
	assert HERE in str(caught.value)


def test_the_refusal_shows_few_and_short_names() -> None:
	many = [f"server-{i}-" + "x" * 10_000 for i in range(1_000)]
	with pytest.raises(NotAddressedHere) as caught:
		check_addressed({TO: many}, HERE)
	text = str(caught.value)
	assert "server-0-" in text and "server-4-" in text and "server-5-" not in text
	assert len(text) < 6 * MAX_SERVER_NAME + 300


# eda-origin and echoes


def test_origin_is_the_header_else_the_source() -> None:
	assert origin_of({ORIGIN: "head"}, "relay") == "head"
	assert origin_of({ORIGIN: "  head  "}, "relay") == "head"
	for junk in (None, "", "   ", 5, ["head"], {"head": 1}, True):
		assert origin_of({ORIGIN: junk}, "relay") == "relay"
	assert origin_of({}, "relay") == "relay"
	assert origin_of({}, "") == ""
	assert origin_of({}, None) == ""  # type: ignore[arg-type]


def test_origin_is_cut_to_a_server_name() -> None:
	assert origin_of({ORIGIN: "h" * 10_000}, "s") == "h" * MAX_SERVER_NAME
	assert origin_of({}, "s" * 10_000) == "s" * MAX_SERVER_NAME


def test_echo() -> None:
	assert is_echo({ORIGIN: HERE}, "relay", HERE)
	assert is_echo({}, HERE, HERE)
	assert is_echo({ORIGIN: 5}, HERE, HERE)  # a junk origin falls back to the source
	assert not is_echo({ORIGIN: "head"}, HERE, HERE)  # relayed back through us, but started elsewhere
	assert not is_echo({ORIGIN: "head"}, "head", HERE)
	assert not is_echo({}, "", "")  # an unnamed server never calls anything its own echo
	assert not is_echo({ORIGIN: HERE.upper()}, "x", HERE)


def test_an_echo_is_seen_with_a_server_name_longer_than_the_cut() -> None:
	here = "a" * (MAX_SERVER_NAME + 60)
	assert is_echo({ORIGIN: here}, "relay", here)
	assert is_echo({}, here, here)


# eda-reply-to


@pytest.mark.parametrize(
	"key",
	["eda.receipt.head", "eda.receipt.head_example_com", "eda.receipt.a-b.c_D9", "eda.receipt." + "x" * 188],
)
def test_receipt_keys_under_the_prefix_are_honoured(key: str) -> None:
	assert receipt_key({REPLY_TO: key}) == key


@pytest.mark.parametrize(
	"key",
	[
		None,
		"",
		5,
		["eda.receipt.head"],
		b"eda.receipt.head",
		"amq.x",
		"amq.rabbitmq.reply-to",
		"eda.receiptx.head",
		"eda.receipt",
		"EDA.RECEIPT.head",
		" eda.receipt.head",
		"eda.receipt.head ",
		"eda.receipt.x#",
		"eda.receipt.*",
		"eda.receipt.#",
		"eda.receipt.a b",
		"eda.receipt.head\n",  # "$" in a pattern matches before a final newline
		"eda.receipt.head\r\n",
		"eda.receipt.head\x00",
		"eda.receipt.\udc80",
		"eda.receipt.héad",
		"eda.receipt.head/../x",
		"order.created\neda.receipt.head",
		"eda.receipt." + "x" * 189,  # 201 characters
		"eda.receipt." + "x" * 288,  # 300 characters
		"eda.receipt." + "x" * 1_000_000,
	],
)
def test_other_reply_keys_are_not_honoured(key: object) -> None:
	assert receipt_key({REPLY_TO: key}) is None


def test_no_reply_header_no_receipt() -> None:
	assert receipt_key({}) is None


@pytest.mark.parametrize(
	"server, key",
	[
		("head.example.com", "eda.receipt.head_example_com"),
		("head-1", "eda.receipt.head-1"),
		("héad:8000/x y", "eda.receipt.h_ad_8000_x_y"),
		("a" * 500, "eda.receipt." + "a" * 150),
	],
)
def test_receipt_key_for_a_server(server: str, key: str) -> None:
	assert receipt_key_for(server) == key


@settings(derandomize=True, max_examples=60)
@given(st.text(st.characters(exclude_categories=()), max_size=300))
def test_a_server_s_own_receipt_key_is_always_honoured(server: str) -> None:
	key = receipt_key_for(server)
	assert key.startswith(RECEIPT_PREFIX) and len(key) <= len(RECEIPT_PREFIX) + 150
	assert receipt_key({REPLY_TO: key}) == key


@settings(derandomize=True, max_examples=60)
@given(st.text(st.characters(exclude_categories=()), max_size=250))
def test_an_honoured_reply_key_is_always_a_plain_key_under_the_prefix(value: str) -> None:
	for candidate in (value, RECEIPT_PREFIX + value):
		key = receipt_key({REPLY_TO: candidate})
		if key is not None:
			assert key == candidate and key.startswith(RECEIPT_PREFIX) and len(key) <= 200
			assert key.isascii() and not set(key) & set("#* \n\r\t\x00/")
