"""Removing a message's parked copy from ``<queue>.dead`` once its record is no longer dead.

The store is the record of what failed; ``<queue>.dead`` holds the broker's parked copies of what is
still dead, the safety net should a record be lost. A replay (or a resolve) takes a record out of Dead,
so its copy goes too: otherwise the dead queue's depth counts messages nothing calls dead any more. A
copy left behind does no harm to the data (a shovelled copy of a settled id is a duplicate and its
handler does not run again), only to the count.

RabbitMQ has no selective delete, so a cleaning reads the dead queue once, in order: a copy of a target
is acked (removed); any other copy is published again, unchanged, to the tail of the same queue, and
acked once the broker confirmed it. Nothing is ever requeued (a quorum queue counts redeliveries). A
crash between the confirm and the ack leaves that copy twice in the queue, never lost. One cleaning per
dead queue runs at a time: the lock is an exclusive queue, which the broker gives to one connection
and drops when that connection ends, so a cleaner that dies frees it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pika.exceptions

from frappe_eda.messaging.connection import CONNECTION_ERRORS, BrokerConnection
from frappe_eda.messaging.errors import DeadLetterCleanupInterrupted, DeadLetterQueueBusy
from frappe_eda.messaging.processing import REPLAY_COUNT
from frappe_eda.messaging.topology import dead_letter_queue
from frappe_eda.messaging.trust.senders import verified_sender, with_sender

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".cleaning"
# Seconds before the first retry of a lock another connection holds; doubled up to one second.
FIRST_WAIT = 0.05
# AMQP short strings (queue names, the message-id property) hold 255 bytes.
MAX_SHORT_STRING = 255
# What a broken scan looks like: the channel or connection went, or the broker did not take a copy back.
_INTERRUPTIONS: tuple[type[BaseException], ...] = (
	*CONNECTION_ERRORS,
	pika.exceptions.UnroutableError,
	pika.exceptions.NackError,
)


@dataclass(frozen=True)
class DeadCopiesRemoved:
	"""What one cleaning of ``queue`` (the dead-letter queue) did."""

	queue: str
	# Target ids whose copy was removed (an id with several copies is listed once).
	removed: tuple[str, ...] = ()
	# Other copies read and published back to the tail of the queue.
	moved: int = 0
	# Target ids with no copy to remove (never dead-lettered, or removed before).
	not_found: tuple[str, ...] = ()


def lock_queue(queue: str) -> str:
	"""The exclusive queue that says ``queue``'s dead letters are being cleaned."""
	name = dead_letter_queue(queue) + LOCK_SUFFIX
	if len(name.encode("utf-8")) <= MAX_SHORT_STRING:
		return name
	return "eda.cleaning." + hashlib.sha1(name.encode("utf-8")).hexdigest()


def copy_id(message_id: str) -> str:
	"""The message-id property of a recorded id's dead copy: the worker puts ids over 255 bytes there
	as their SHA-1 (``consumer._short_string``); the cleaning looks them up the same way."""
	data = message_id.encode("utf-8", "backslashreplace")
	return message_id if len(data) <= MAX_SHORT_STRING else "sha1-" + hashlib.sha1(data).hexdigest()


def remove_dead_copies(
	connection: BrokerConnection,
	queue: str,
	message_ids: Iterable[str],
	*,
	replayed: Mapping[str, int] | None = None,
	lock_timeout: float = 30.0,
) -> DeadCopiesRemoved:
	"""Remove the copies of ``message_ids`` from ``<queue>.dead``; keep every other copy as it was.

	``replayed`` maps an id to the replay number just sent (``x-eda-replay-count``): of that id only the
	copies parked before the replay (a smaller count, or none) are removed, so a copy the worker parked
	because the replay failed again stays. The scan reads at most the messages the queue held when it
	started and stops as soon as every target was removed once. A missing dead queue means nothing to do.

	Raises ``DeadLetterQueueBusy`` when another connection held the queue's cleaning lock for
	``lock_timeout`` seconds, and ``DeadLetterCleanupInterrupted`` when the channel or connection broke
	or the broker did not confirm a copy put back (what was not acked returns to the queue; a copy put
	back but not yet acked is then there twice, never lost).
	"""
	dead = dead_letter_queue(queue)
	own_user = connection.settings.user
	targets = {copy_id(i): i for i in dict.fromkeys(message_ids)}
	if not targets:
		return DeadCopiesRemoved(dead)
	before = {copy_id(i): n for i, n in (replayed or {}).items()}
	lock = lock_queue(queue)
	lock_channel = _take_lock(connection, queue, lock, lock_timeout)
	removed: dict[str, None] = {}
	moved = 0
	try:
		channel = connection.channel()
		try:
			try:
				frame = channel.queue_declare(dead, passive=True)
			except pika.exceptions.ChannelClosedByBroker as e:
				if e.reply_code == 404:
					return DeadCopiesRemoved(dead, not_found=tuple(targets.values()))
				raise
			channel.confirm_delivery()
			pending = set(targets)
			for _ in range(int(frame.method.message_count)):
				if not pending:
					break
				method, properties, body = channel.basic_get(dead, auto_ack=False)
				if method is None:
					break  # someone else took the rest
				found = properties.message_id
				if found in targets and _parked_before(properties, before.get(found)):
					channel.basic_ack(method.delivery_tag)
					removed[targets[found]] = None
					pending.discard(found)
					continue
				# Confirmed before the original is acked: a crash in between leaves two copies, not none.
				channel.basic_publish("", dead, body, _put_back(properties, own_user), mandatory=True)
				channel.basic_ack(method.delivery_tag)
				moved += 1
		finally:
			_close(channel)
	except _INTERRUPTIONS as e:
		raise DeadLetterCleanupInterrupted(dead, e) from e
	finally:
		_release_lock(connection, lock_channel, lock)
	not_found = tuple(i for i in targets.values() if i not in removed)
	log.info("%s: removed %d dead copies, moved %d others", dead, len(removed), moved)
	return DeadCopiesRemoved(dead, tuple(removed), moved, not_found)


def _parked_before(properties: Any, replay: int | None) -> bool:
	if replay is None:
		return True
	count = (properties.headers or {}).get(REPLAY_COUNT, 0)
	return not isinstance(count, int) or isinstance(count, bool) or count < replay


def _take_lock(connection: BrokerConnection, queue: str, lock: str, timeout: float) -> Any:
	"""Declare the exclusive lock queue; while another connection holds it the broker closes the
	channel with 405 RESOURCE_LOCKED, and the declare is tried again, with back-off, until ``timeout``."""
	deadline = time.monotonic() + timeout
	wait = FIRST_WAIT
	while True:
		channel = connection.channel()
		try:
			channel.queue_declare(lock, durable=False, exclusive=True, auto_delete=True)
			return channel
		except pika.exceptions.ChannelClosedByBroker as e:
			if e.reply_code != 405:
				raise DeadLetterCleanupInterrupted(dead_letter_queue(queue), e) from e
		except CONNECTION_ERRORS as e:
			raise DeadLetterCleanupInterrupted(dead_letter_queue(queue), e) from e
		if wait == FIRST_WAIT:
			log.info("%s is being cleaned by another connection; waiting up to %.0fs", queue, timeout)
		left = deadline - time.monotonic()
		if left <= 0:
			raise DeadLetterQueueBusy(dead_letter_queue(queue), lock, timeout)
		connection.sleep(min(wait, left))
		wait = min(wait * 2, 1.0)


def _release_lock(connection: BrokerConnection, channel: Any, lock: str) -> None:
	"""Delete the lock queue. Should that fail, it goes when this connection closes (it is exclusive)."""
	try:
		if not channel.is_open:
			if not connection.is_open:
				return
			channel = connection.channel()
		channel.queue_delete(lock)
	except CONNECTION_ERRORS as e:
		log.warning("could not delete the lock queue %s (%s); it goes with this connection", lock, e)
	finally:
		_close(channel)


def _close(channel: Any) -> None:
	if channel.is_open:
		try:
			channel.close()
		except CONNECTION_ERRORS:
			pass


def _put_back(properties: pika.BasicProperties, own_user: str) -> pika.BasicProperties:
	"""A parked copy goes back under this connection's user (the broker refuses another ``user_id``),
	with the sender it was verified as in ``x-eda-sender`` (``trust.senders``)."""
	sender = verified_sender(properties.user_id, properties.headers or {}, own_user)
	properties.headers = with_sender(properties.headers or {}, sender)
	properties.user_id = own_user
	return properties
