"""Compact digests of a set of documents, for reconciliation (anti-entropy).

Events miss what bypasses hooks (raw SQL, a patch, a copy deleted by hand). To find that without sending
every document, source and subscriber each reduce their copies to ``buckets`` digests: a document goes to
the bucket its name hashes to, and a bucket's digest is its count and the XOR of a hash of each ``name``
and ``modified``. Equal digests mean equal contents (up to a 64-bit collision); only buckets that differ
are listed in full (names and ``modified``) and compared, and only documents that differ are sent again.
So the cost grows with what differs, not with the table: one digest message of ``buckets`` entries, one
listing per differing bucket, one message per document out of step.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from frappe_eda.messaging.replication.versions import parse_modified

DEFAULT_BUCKETS = 256
MAX_BUCKETS = 4096
_BUCKET_KEY = re.compile(r"[0-9]{1,5}")  # the bucket as digest_to_wire writes it
_HASH = re.compile(r"[0-9a-fA-F]{1,16}")  # 64 bits in hex


@dataclass(frozen=True)
class BucketDigest:
	count: int
	hash: int

	def to_wire(self) -> list[Any]:
		return [self.count, format(self.hash, "016x")]


def normalized_modified(value: Any) -> str:
	"""``modified`` as both sides write it, whatever type or precision their database returned."""
	return parse_modified(value).isoformat(sep=" ", timespec="microseconds")


def bucket_of(name: str, buckets: int) -> int:
	return int.from_bytes(hashlib.sha1(name.encode("utf-8", "surrogatepass")).digest()[:4], "big") % buckets


def _item_hash(name: str, modified: str) -> int:
	text = f"{name}\x1f{modified}".encode("utf-8", "surrogatepass")
	return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def content_token(value: Any) -> str:
	"""A content hash (``frappe_eda.replication.content``) as the version of a document: compared as text."""
	return value or ""


def digest(
	items: Iterable[tuple[str, Any]],
	buckets: int = DEFAULT_BUCKETS,
	token: Callable[[Any], str] = normalized_modified,
) -> dict[int, BucketDigest]:
	"""Per bucket, count and XOR of the items ``(name, version)``; empty buckets are left out. The
	version is ``modified`` by default; ``token=content_token`` compares content hashes instead, which
	also see a change that kept ``modified`` (a raw SQL update)."""
	_check_buckets(buckets)
	counts: dict[int, int] = {}
	hashes: dict[int, int] = {}
	for name, version in items:
		bucket = bucket_of(name, buckets)
		counts[bucket] = counts.get(bucket, 0) + 1
		hashes[bucket] = hashes.get(bucket, 0) ^ _item_hash(name, token(version))
	return {b: BucketDigest(counts[b], hashes[b]) for b in counts}


def digest_to_wire(digests: Mapping[int, BucketDigest]) -> dict[str, list[Any]]:
	return {str(b): d.to_wire() for b, d in sorted(digests.items())}


def digest_from_wire(value: Any, buckets: int) -> dict[int, BucketDigest]:
	"""A digest another server sent; ``ValueError`` when it is not one (the caller refuses the message)."""
	_check_buckets(buckets)
	if not isinstance(value, Mapping) or len(value) > buckets:
		raise ValueError("a digest is an object of at most one entry per bucket")
	out = {}
	for key, entry in value.items():
		if not isinstance(key, str) or not _BUCKET_KEY.fullmatch(key):
			raise ValueError(f"a digest's bucket {str(key)[:20]!r} is not a bucket number")
		bucket = int(key)
		if not 0 <= bucket < buckets:
			raise ValueError(f"bucket {bucket} is outside 0..{buckets - 1}")
		if bucket in out:
			raise ValueError(f"bucket {bucket} is given twice")
		if (
			not isinstance(entry, list)
			or len(entry) != 2
			or type(entry[0]) is not int
			or entry[0] < 0
			or not isinstance(entry[1], str)
			or not _HASH.fullmatch(entry[1])
		):
			raise ValueError(f"bucket {bucket}'s digest is not [count, hash]")
		out[bucket] = BucketDigest(entry[0], int(entry[1], 16))
	return out


def _check_buckets(buckets: int) -> None:
	if type(buckets) is not int or not 1 <= buckets <= MAX_BUCKETS:
		raise ValueError(f"the number of buckets is {buckets!r}, not 1..{MAX_BUCKETS}")


def differing_buckets(theirs: Mapping[int, BucketDigest], ours: Mapping[int, BucketDigest]) -> list[int]:
	return sorted(b for b in set(theirs) | set(ours) if theirs.get(b) != ours.get(b))


def compare_listing(
	source: Mapping[str, Any],
	local: Mapping[str, Any],
	token: Callable[[Any], str] = normalized_modified,
) -> tuple[list[str], list[str]]:
	"""``(to_send, gone)``: names the source must send again (missing here or another version), and
	names the subscriber holds that the source no longer has."""
	to_send = sorted(
		name for name, version in source.items() if name not in local or token(local[name]) != token(version)
	)
	gone = sorted(name for name in local if name not in source)
	return to_send, gone
