"""A site's EDA configuration: the EDA Settings single, overridden key by key by ``site_config.json``.

Deployments that keep secrets out of the database set ``eda_amqp_url`` (and friends) in
``site_config.json`` or ``common_site_config.json``; those win over the desk form. The password is read
with ``get_password`` and lives only inside the ``BrokerSettings`` URL, whose ``repr`` masks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import frappe

from frappe_eda.messaging.connection import BrokerSettings, TlsOptions, split_addresses
from frappe_eda.messaging.retry import DEFAULT_DELAYS, RetryPolicy
from frappe_eda.messaging.trust.signing import SigningKey

SETTINGS_DOCTYPE = "EDA Settings"
DEFAULT_BATCH_SIZE = 50

# site_config key -> EDA Settings field
OVERRIDES = {
	"eda_enabled": "enabled",
	"eda_amqp_url": "amqp_url",
	"eda_broker_nodes": "broker_nodes",
	"eda_exchange": "default_exchange",
	"eda_prefetch": "prefetch",
	"eda_batch_size": "batch_size",
	"eda_max_attempts": "max_attempts",
	"eda_retry_delays": "retry_delays",
	"eda_queue_type": "queue_type",
	"eda_worker_user": "worker_user",
	"eda_sentry_dsn": "sentry_dsn",
	"eda_ca_file": "ca_file",
	"eda_cert_file": "cert_file",
	"eda_key_file": "key_file",
	"eda_verify_tls": "verify_tls",
	"eda_retention_days": "retention_days",
	"eda_trusted_network": "trusted_network",
	"eda_signing_key": "signing_key",
}


ALL_FIELDS = frozenset(OVERRIDES.values()) | {
	"host",
	"port",
	"vhost",
	"username",
	"use_tls",
	"notify_role",
	"notify_email",
}
TRUST_FIELDS = frozenset({"trusted_network"})
OUTBOX_FIELDS = frozenset({"enabled", "default_exchange"})
# Password fields of EDA Settings (a broker URL carries a password): encrypted in __Auth, never in
# tabSingles or in the Version rows of this tracked single.
SECRET_FIELDS = frozenset({"amqp_url", "sentry_dsn", "signing_key"})


@dataclass(frozen=True)
class SiteSettings:
	enabled: bool
	broker: BrokerSettings
	exchange: str
	prefetch: int
	batch_size: int  # messages per site transaction in the worker, each in a savepoint of its own
	retry: RetryPolicy
	queue_type: str
	worker_user: str
	notify_role: str
	notify_email: bool
	sentry_dsn: str | None
	retention_days: int


def parse_delays(text: str | None) -> tuple[float, ...]:
	if not text:
		return DEFAULT_DELAYS
	return tuple(float(part) for part in str(text).replace(";", ",").split(",") if part.strip())


@dataclass(frozen=True)
class OutboxSettings:
	"""What a document save needs to queue a message: read on every save, so no password is decrypted
	and no broker settings are built."""

	enabled: bool
	exchange: str


def load_outbox_settings() -> OutboxSettings:
	return _outbox(_values(frappe.get_cached_doc(SETTINGS_DOCTYPE), OUTBOX_FIELDS))


def _outbox(values: dict[str, Any]) -> OutboxSettings:
	return OutboxSettings(
		enabled=bool(int(values.get("enabled") or 0)),
		exchange=values.get("default_exchange") or "eda.events",
	)


def load_settings() -> SiteSettings:
	doc = frappe.get_cached_doc(SETTINGS_DOCTYPE)
	values = _values(doc, ALL_FIELDS)
	outbox = _outbox(values)
	tls = None
	if (
		values.get("use_tls")
		or values.get("ca_file")
		or str(values.get("amqp_url") or "").startswith("amqps://")
	):
		tls = TlsOptions(
			ca_file=values.get("ca_file") or None,
			cert_file=values.get("cert_file") or None,
			key_file=values.get("key_file") or None,
			verify=bool(int(values.get("verify_tls", 1) or 0)),
		)
	# A cluster's other nodes: a list from site_config.json, or lines / commas from the form.
	nodes = tuple(split_addresses(values.get("broker_nodes") or ""))
	if values.get("amqp_url"):
		broker = BrokerSettings(
			url=values["amqp_url"], tls=tls, client_name=f"frappe_eda:{frappe.local.site}", nodes=nodes
		)
	else:
		broker = BrokerSettings.from_parts(
			host=values.get("host") or "127.0.0.1",
			port=int(values.get("port") or 0) or None,
			vhost=values.get("vhost") or "/",
			user=values.get("username") or "guest",
			password=_password(doc) or "guest",
			tls=tls,
			client_name=f"frappe_eda:{frappe.local.site}",
			nodes=nodes,
		)
	return SiteSettings(
		enabled=outbox.enabled,
		broker=broker,
		exchange=outbox.exchange,
		prefetch=int(values.get("prefetch") or 100),
		batch_size=max(1, int(values.get("batch_size") or DEFAULT_BATCH_SIZE)),
		retry=RetryPolicy(
			max_attempts=int(values.get("max_attempts") or 5), delays=parse_delays(values.get("retry_delays"))
		),
		queue_type=values.get("queue_type") or "classic",
		worker_user=values.get("worker_user") or "Administrator",
		notify_role=values.get("notify_role") or "EDA Manager",
		notify_email=bool(int(values.get("notify_email") or 0)),
		sentry_dsn=values.get("sentry_dsn") or None,
		# 0 (or less) keeps everything; only an unset value falls back to 30 days.
		retention_days=int(values["retention_days"])
		if values.get("retention_days") not in (None, "")
		else 30,
	)


def load_worker_user() -> str:
	"""The user handlers run as, read per message (``eda_worker_user`` in site_config.json wins)."""
	values = _values(frappe.get_cached_doc(SETTINGS_DOCTYPE), frozenset({"worker_user"}))
	return values.get("worker_user") or "Administrator"


def _values(doc: Any, fields: frozenset[str]) -> dict[str, Any]:
	"""``fields`` of the form, each overridden by its ``site_config`` key when that is set."""
	values = {field: doc.get(field) for field in fields}
	for field in SECRET_FIELDS & fields:  # the form holds asterisks; the value is in __Auth
		if frappe.conf.get(f"eda_{field}") is None:
			values[field] = doc.get_password(field, raise_exception=False) if doc.get(field) else None
	for key, field in OVERRIDES.items():
		if field in fields and frappe.conf.get(key) is not None:
			values[field] = frappe.conf.get(key)
	return values


def _password(doc: Any) -> str | None:
	if not doc.get("password"):
		return None
	return doc.get_password("password", raise_exception=False)


def trusted_network() -> bool:
	"""Whether this site takes receipts and reconciliation requests from any member, unproven (a network
	still sharing one broker user); ``eda_trusted_network`` in site_config.json wins."""
	values = _values(frappe.get_cached_doc(SETTINGS_DOCTYPE), TRUST_FIELDS)
	return bool(int(values.get("trusted_network") or 0))


_signers: dict[str, tuple[Any, SigningKey | None]] = {}


def load_signer() -> SigningKey | None:
	"""This site's signing key, or None: decrypted once per change of EDA Settings (or of the site config
	value), not per message."""
	doc = frappe.get_cached_doc(SETTINGS_DOCTYPE)
	configured = frappe.conf.get("eda_signing_key")
	version = (doc.get("modified"), configured)
	cached = _signers.get(frappe.local.site)
	if cached is not None and cached[0] == version:
		return cached[1]
	text = _values(doc, frozenset({"signing_key"})).get("signing_key")
	signer = SigningKey.from_text(text) if text else None
	_signers[frappe.local.site] = (version, signer)
	return signer
