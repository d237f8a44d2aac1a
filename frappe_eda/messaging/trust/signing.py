"""End-to-end signatures: a source signs each body with its Ed25519 key, subscribers verify.

The broker's ``user_id`` proves the sender only between the sender's connection and the queue. A
message that crossed a shovel or a federation link, or was published by a user with RabbitMQ's
``impersonator`` tag, carries whatever ``user_id`` that hop chose. A signature over the exact body
(which holds the id, type, source, addressing headers and payload) does not depend on any hop: a
subscriber that holds the source's public keys refuses anything they do not verify.

Keys are text, so they fit a site config, an environment variable or a desk field:

- a signing key: ``ed25519-private:<base64 of the 32-byte seed>`` (a secret, like a password);
- a public key: ``ed25519:<base64 of the 32 bytes>``; its id is the first 16 hex digits of its SHA-256.

The ``x-eda-signature`` header is ``<key id>:<base64 signature>``. A key ring holds several public keys,
so a source rotates without downtime: subscribers add the new public key, the source switches to the new
signing key, and the old public key is removed once nothing signed with it is waiting or needs a
replay. ``cryptography`` (already in every Frappe bench) does the mathematics.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from frappe_eda.messaging.errors import BadSignature, ConfigurationError, UnsignedMessage

SIGNATURE = "x-eda-signature"
PRIVATE_PREFIX = "ed25519-private:"
PUBLIC_PREFIX = "ed25519:"
MAX_SIGNATURE_HEADER = 200


def _ed25519() -> Any:
	try:
		from cryptography.hazmat.primitives.asymmetric import ed25519
	except ImportError as e:  # pragma: no cover - a dependency of frappe_eda
		raise ConfigurationError(
			"signatures need the 'cryptography' package: pip install cryptography"
		) from e
	return ed25519


def _raw(text: str, prefix: str, what: str) -> bytes:
	text = text.strip()
	if not text.startswith(prefix):
		raise ConfigurationError(f"{what} must start with {prefix!r}")
	try:
		raw = base64.b64decode(text[len(prefix) :], validate=True)
	except (binascii.Error, ValueError):
		raise ConfigurationError(f"{what} is not valid base64 after {prefix!r}") from None
	if len(raw) != 32:
		raise ConfigurationError(f"{what} holds {len(raw)} bytes; an Ed25519 key has 32")
	return raw


@dataclass(frozen=True)
class PublicKey:
	raw: bytes

	@classmethod
	def from_text(cls, text: str) -> PublicKey:
		return cls(_raw(text, PUBLIC_PREFIX, "a public key"))

	@property
	def text(self) -> str:
		return PUBLIC_PREFIX + base64.b64encode(self.raw).decode("ascii")

	@property
	def key_id(self) -> str:
		return hashlib.sha256(self.raw).hexdigest()[:16]

	def verifies(self, body: bytes, signature: bytes) -> bool:
		from cryptography.exceptions import InvalidSignature

		try:
			_ed25519().Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, body)
		except InvalidSignature:
			return False
		return True


class SigningKey:
	"""A source's private key. Its ``repr`` shows the public key id only."""

	def __init__(self, seed: bytes) -> None:
		self._key = _ed25519().Ed25519PrivateKey.from_private_bytes(seed)
		from cryptography.hazmat.primitives import serialization

		raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
		self.public = PublicKey(raw)
		self._seed = seed

	@classmethod
	def generate(cls) -> SigningKey:
		import os

		return cls(os.urandom(32))

	@classmethod
	def from_text(cls, text: str) -> SigningKey:
		return cls(_raw(text, PRIVATE_PREFIX, "a signing key"))

	@property
	def text(self) -> str:
		"""The secret itself, for storing where passwords go; never log it."""
		return PRIVATE_PREFIX + base64.b64encode(self._seed).decode("ascii")

	def sign(self, body: bytes) -> str:
		"""The ``x-eda-signature`` header value for ``body``."""
		signature = base64.b64encode(self._key.sign(body)).decode("ascii")
		return f"{self.public.key_id}:{signature}"

	def __repr__(self) -> str:
		return f"SigningKey(key_id={self.public.key_id!r})"

	__str__ = __repr__


class KeyRing:
	"""The public keys a subscriber trusts for one source (several during a rotation)."""

	def __init__(self, keys: Iterable[PublicKey]) -> None:
		self.keys = {key.key_id: key for key in keys}
		if not self.keys:
			raise ConfigurationError("a key ring needs at least one public key")

	@classmethod
	def from_text(cls, text: str) -> KeyRing:
		"""Keys separated by commas, spaces or lines; blank and ``#`` comment lines are ignored."""
		lines = [line.split("#", 1)[0] for line in text.splitlines()]
		return cls(PublicKey.from_text(part) for part in re.split(r"[\s,]+", "\n".join(lines)) if part)

	@classmethod
	def parse_or_none(cls, text: str | None) -> KeyRing | None:
		return cls.from_text(text) if text and text.strip() else None

	def verify(self, body: bytes, header: Any) -> str:
		"""The id of the key that signed ``body``; ``UnsignedMessage`` or ``BadSignature`` otherwise."""
		if header is None or header == "":
			raise UnsignedMessage(SIGNATURE)
		if isinstance(header, bytes):
			header = header.decode("ascii", "replace")
		if not isinstance(header, str) or len(header) > MAX_SIGNATURE_HEADER or ":" not in header:
			raise BadSignature(f"{SIGNATURE} is not '<key id>:<base64 signature>'")
		key_id, _, encoded = header.partition(":")
		key = self.keys.get(key_id)
		if key is None:
			known = ", ".join(sorted(self.keys))
			raise BadSignature(
				f"signed with key {key_id[:16]!r}, which is not one of the trusted keys ({known})"
			)
		try:
			signature = base64.b64decode(encoded, validate=True)
		except (binascii.Error, ValueError):
			raise BadSignature("the signature is not valid base64") from None
		if len(signature) != 64 or not key.verifies(body, signature):
			raise BadSignature(f"the body does not match its signature by key {key_id}")
		return key_id

	def __repr__(self) -> str:
		return f"KeyRing({sorted(self.keys)!r})"
