"""The sender of a delivery as the broker proved it, and the policy a queue applies to it.

Every publish of frappe_eda carries ``user_id`` = the connection's broker user, which RabbitMQ checks.
The consuming side reads that, never the body's ``source``:

- A delivery from another server: its ``user_id`` is the sender.
- A copy this worker published itself (a retry waiting in a delay queue, a dead-letter copy, a replay
  from the desk or the command line): its ``user_id`` is this worker's own user, and the sender it was
  first verified as travels in the ``x-eda-sender`` header. That header is believed only on a delivery
  whose ``user_id`` is the worker's own user, which no other broker user can forge; on any other
  delivery it is ignored.
- No ``user_id`` at all: nothing is proven.

A network where every server shares one broker user proves nothing this way (everyone is everyone);
that is the "trusted network" mode, in which a queue takes any sender (``SenderPolicy.trusted()``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from frappe_eda.messaging.errors import UnprovenSender, WrongSender
from frappe_eda.messaging.trust.signing import SIGNATURE, KeyRing

SENDER = "x-eda-sender"
MAX_USER = 255  # an AMQP short string


def verified_sender(user_id: Any, headers: Mapping[str, Any], own_user: str | None) -> str:
	"""The broker user that sent this delivery first; ``""`` when nothing proves one.

	``user_id`` is the delivery's AMQP property (validated by the broker at publish); ``own_user`` is the
	consuming connection's user, whose own republished copies carry the first sender in ``x-eda-sender``.
	"""
	if not isinstance(user_id, str) or not user_id:
		return ""
	if own_user and user_id == own_user:
		first = headers.get(SENDER)
		if isinstance(first, str):
			return first[:MAX_USER]
	return user_id[:MAX_USER]


@dataclass(frozen=True)
class SenderPolicy:
	"""Which senders a queue takes messages from.

	``senders``: the broker users allowed (empty: any proven sender). ``require_proof`` False is the
	trusted-network mode: any message is taken, proven or not. ``keys``: when set, every message must also
	carry a valid Ed25519 signature (``x-eda-signature``) by one of these public keys, whatever the broker
	says; this holds across shovels, federation and impersonating users.
	"""

	senders: frozenset[str] = field(default_factory=frozenset)
	require_proof: bool = True
	keys: KeyRing | None = None

	@classmethod
	def only(cls, senders: Iterable[str], keys: KeyRing | None = None) -> SenderPolicy:
		return cls(frozenset(s for s in senders if s), True, keys)

	@classmethod
	def trusted(cls, keys: KeyRing | None = None) -> SenderPolicy:
		"""Trusted-network mode: every server may send as any other (one shared broker user)."""
		return cls(frozenset(), False, keys)

	def describe(self) -> str:
		if not self.require_proof:
			return "any server (trusted network: the sender is not proven)"
		if not self.senders:
			return "any broker-validated sender"
		return "broker user " + " or ".join(repr(s) for s in sorted(self.senders))

	def check(self, sender: str, body: bytes, headers: Mapping[str, Any], claimed: str = "") -> None:
		"""Raise the specific ``UntrustedSender`` error when this policy does not take the delivery."""
		if self.require_proof:
			if not sender:
				raise UnprovenSender(self.describe())
			if self.senders and sender not in self.senders:
				raise WrongSender(sender, self.describe(), claimed)
		if self.keys is not None:
			self.keys.verify(body, headers.get(SIGNATURE))


def with_sender(headers: Mapping[str, Any], sender: str) -> dict[str, Any]:
	"""``headers`` for a copy this worker republishes: ``x-eda-sender`` is the verified first sender
	(never what the original's headers claimed), absent when nothing proved one."""
	copied = {k: v for k, v in headers.items() if k != SENDER}
	if sender:
		copied[SENDER] = sender
	return copied
