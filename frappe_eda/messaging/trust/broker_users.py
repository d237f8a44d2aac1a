"""Create or update one server's broker user, through RabbitMQ's management HTTP API or as commands.

``provision`` is idempotent: run it again after a server gains a subscription or a destination and its
permissions follow. The administrator's credentials are used for the calls and never kept: they come
from the command line, a prompt or the environment, and leave with the process. The server's own
password is set only when one is given (a new user gets a generated one, returned once); an existing
user keeps its password otherwise.

The exchanges a server publishes to or binds from are declared here, by the administrator, so members
need no ``configure`` permission on them (they only check them, passively).

The management plugin ships with RabbitMQ (``rabbitmq-plugins enable rabbitmq_management``). Amazon MQ
for RabbitMQ exposes the same API on its web console endpoint (HTTPS, port 443) and has no
``rabbitmqctl``; CloudAMQP likewise. ``rabbitmqctl_commands`` prints the same changes for operators who
prefer to run them.
"""

from __future__ import annotations

import base64
import json
import secrets
import shlex
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from frappe_eda.messaging.errors import EdaError
from frappe_eda.messaging.trust.permissions import Permissions, ServerTraffic, permissions_for


class ManagementApiError(EdaError):
	"""The management API refused a call or could not be reached; says which call and why."""


@dataclass
class ProvisionReport:
	user: str
	created: bool
	password: str | None  # set only when this call chose or changed it
	permissions: Permissions
	exchanges: list[str] = field(default_factory=list)

	def summary(self) -> str:
		p = self.permissions
		lines = [
			f"{'created' if self.created else 'updated'} broker user {self.user!r}",
			f"  configure {p.configure}",
			f"  write     {p.write}",
			f"  read      {p.read}",
		]
		lines += [f"  topic {t.exchange}: write {t.write}  read {t.read}" for t in p.topics]
		return "\n".join(lines)


class ManagementApi:
	"""A few calls of RabbitMQ's management HTTP API (standard library only)."""

	def __init__(
		self, url: str, user: str | None = None, password: str | None = None, timeout: float = 15
	) -> None:
		parts = urlsplit(url)
		if parts.scheme not in ("http", "https"):
			raise ManagementApiError(
				f"the management URL must start with http:// or https://, not {url[:40]!r}"
			)
		self.user = user or (parts.username and _unquote(parts.username)) or ""
		self.password = password if password is not None else _unquote(parts.password or "")
		host = parts.hostname or ""
		netloc = f"[{host}]" if ":" in host else host
		if parts.port:
			netloc += f":{parts.port}"
		self.base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
		self.timeout = timeout

	def __repr__(self) -> str:
		return f"ManagementApi({self.base!r}, user={self.user!r})"

	def request(self, method: str, path: str, body: Any = None) -> Any:
		data = None if body is None else json.dumps(body).encode("utf-8")
		request = urllib.request.Request(self.base + path, data=data, method=method)
		token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
		request.add_header("Authorization", f"Basic {token}")
		request.add_header("Content-Type", "application/json")
		try:
			with urllib.request.urlopen(request, timeout=self.timeout) as response:
				text = response.read().decode("utf-8")
		except urllib.error.HTTPError as e:
			if e.code == 404 and method == "GET":
				return None
			detail = e.read().decode("utf-8", "replace")[:300]
			raise ManagementApiError(f"{method} {path}: HTTP {e.code} {detail}") from None
		except (urllib.error.URLError, OSError) as e:
			raise ManagementApiError(f"{method} {self.base}{path}: {getattr(e, 'reason', e)}") from None
		return json.loads(text) if text.strip() else None

	def user_info(self, name: str) -> dict[str, Any] | None:
		return self.request("GET", f"/api/users/{_q(name)}")

	def put_user(self, name: str, password: str | None, tags: str = "") -> bool:
		"""Create ``name`` or update it; keeps its password when ``password`` is None. True if created."""
		existing = self.user_info(name)
		body: dict[str, Any] = {"tags": tags}
		if password is not None:
			body["password"] = password
		elif existing is not None:
			body["password_hash"] = existing.get("password_hash", "")
			body["hashing_algorithm"] = existing.get("hashing_algorithm", "rabbit_password_hashing_sha256")
		else:
			raise ManagementApiError(f"user {name!r} does not exist: give it a password")
		self.request("PUT", f"/api/users/{_q(name)}", body)
		return existing is None

	def delete_user(self, name: str) -> None:
		if self.user_info(name) is not None:
			self.request("DELETE", f"/api/users/{_q(name)}")

	def declare_exchange(self, vhost: str, name: str, type: str = "topic") -> None:
		current = self.request("GET", f"/api/exchanges/{_q(vhost)}/{_q(name)}")
		if current is None:
			body = {"type": type, "durable": True, "auto_delete": False, "internal": False, "arguments": {}}
			self.request("PUT", f"/api/exchanges/{_q(vhost)}/{_q(name)}", body)

	def apply(self, vhost: str, permissions: Permissions) -> None:
		user = _q(permissions.user)
		self.request(
			"PUT",
			f"/api/permissions/{_q(vhost)}/{user}",
			{"configure": permissions.configure, "write": permissions.write, "read": permissions.read},
		)
		wanted = {t.exchange for t in permissions.topics}
		for old in self.request("GET", f"/api/users/{user}/topic-permissions") or []:
			if old.get("vhost") == vhost and old.get("exchange") not in wanted:
				self.request("DELETE", f"/api/topic-permissions/{_q(vhost)}/{user}")
				break
		for topic in permissions.topics:
			self.request(
				"PUT",
				f"/api/topic-permissions/{_q(vhost)}/{user}",
				{"exchange": topic.exchange, "write": topic.write, "read": topic.read},
			)


def provision(
	api: ManagementApi, vhost: str, traffic: ServerTraffic, password: str | None = None
) -> ProvisionReport:
	"""Create or update ``traffic.user`` with exactly the permissions its traffic needs."""
	if api.user_info(traffic.user) is None and password is None:
		password = new_password()
	created = api.put_user(traffic.user, password)
	exchanges = sorted({r.exchange for r in (*traffic.publishes, *traffic.binds) if r.exchange})
	for exchange in exchanges:
		api.declare_exchange(vhost, exchange, "topic" if exchange in traffic.topic_exchanges else "direct")
	permissions = permissions_for(traffic)
	api.apply(vhost, permissions)
	return ProvisionReport(traffic.user, created, password, permissions, exchanges)


def rabbitmqctl_commands(vhost: str, traffic: ServerTraffic) -> list[str]:
	"""The same changes as ``provision``, as shell commands (the password is left for the operator)."""
	p = permissions_for(traffic)
	user, v = shlex.quote(traffic.user), shlex.quote(vhost)
	commands = [
		f'rabbitmqctl add_user {user} "$EDA_SERVER_PASSWORD"  # or change_password for an existing user',
		f"rabbitmqctl set_user_tags {user}",
	]
	for exchange in sorted({r.exchange for r in (*traffic.publishes, *traffic.binds) if r.exchange}):
		kind = "topic" if exchange in traffic.topic_exchanges else "direct"
		commands.append(
			f"rabbitmqadmin -V {v} declare exchange name={shlex.quote(exchange)} type={kind} durable=true"
		)
	commands.append(
		f"rabbitmqctl set_permissions -p {v} {user} "
		f"{shlex.quote(p.configure)} {shlex.quote(p.write)} {shlex.quote(p.read)}"
	)
	commands.append(f"rabbitmqctl clear_topic_permissions -p {v} {user}")
	for t in p.topics:
		commands.append(
			f"rabbitmqctl set_topic_permissions -p {v} {user} {shlex.quote(t.exchange)} "
			f"{shlex.quote(t.write)} {shlex.quote(t.read)}"
		)
	return commands


def new_password() -> str:
	return secrets.token_urlsafe(24)


def _q(text: str) -> str:
	return quote(text, safe="")


def _unquote(text: str) -> str:
	from urllib.parse import unquote

	return unquote(text)
