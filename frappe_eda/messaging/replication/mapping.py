"""Source fields to local fields: rename, skip, default, constant; in child tables too.

A subscription lists rules; everything else a payload holds is copied under its own name when the local
DocType has such a field (the Frappe layer passes the field names it has). Standard fields of the source
(``owner``, ``creation``, ``modified``, ``docstatus``, ...) and anything starting with ``_`` are never
copied: they are the source's, and the local copy has its own.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from frappe_eda.messaging.errors import ConfigurationError

NEVER_COPIED = frozenset(
	{
		"name",
		"owner",
		"creation",
		"modified",
		"modified_by",
		"docstatus",
		"idx",
		"parent",
		"parentfield",
		"parenttype",
		"doctype",
		"amended_from",
	}
)


class FieldAction(str, enum.Enum):
	MAP = "Map"  # copy the source field into the target field (a rename when the names differ)
	SKIP = "Skip"  # never copy the source field
	DEFAULT = "Default"  # the target gets ``value`` when the source sends nothing (missing, null, "")
	CONSTANT = "Constant"  # the target always gets ``value``, whatever the source sends


@dataclass(frozen=True)
class FieldRule:
	action: FieldAction
	source: str = ""
	target: str = ""
	value: Any = None
	table: str = ""  # a source child-table field: the rule applies inside each of its rows

	def __post_init__(self) -> None:
		if self.action in (FieldAction.MAP, FieldAction.SKIP) and not self.source:
			raise ConfigurationError(f"a {self.action.value} rule needs a source field")
		if self.action in (FieldAction.DEFAULT, FieldAction.CONSTANT) and not (self.target or self.source):
			raise ConfigurationError(f"a {self.action.value} rule needs a target field")

	@property
	def target_field(self) -> str:
		return self.target or self.source


@dataclass(frozen=True)
class FieldMapping:
	rules: tuple[FieldRule, ...] = ()
	copy_unlisted: bool = True  # fields no rule names are copied under their own name

	def rules_for(self, table: str) -> list[FieldRule]:
		return [r for r in self.rules if r.table == table]


@dataclass
class LocalFields:
	"""The field names of the local DocType, and its child tables' by table field."""

	fields: Collection[str]
	tables: Mapping[str, Collection[str]] = field(default_factory=dict)


def map_document(payload: Mapping[str, Any], mapping: FieldMapping, local: LocalFields) -> dict[str, Any]:
	"""The local values of ``payload``: only fields the local DocType has; child tables mapped row by row
	(their table field renamed by a top-level rule as any field)."""
	values = _map_row(payload, mapping.rules_for(""), mapping.copy_unlisted, local.fields)
	renamed = {r.source: r.target_field for r in mapping.rules_for("") if r.action is FieldAction.MAP}
	skipped = {r.source for r in mapping.rules_for("") if r.action is FieldAction.SKIP}
	for source_table, rows in payload.items():
		if not isinstance(rows, list) or source_table in skipped:
			continue
		if not mapping.copy_unlisted and source_table not in renamed and not mapping.rules_for(source_table):
			continue
		target_table = renamed.get(source_table, source_table)
		if target_table not in local.tables:
			values.pop(target_table, None)
			continue
		row_fields = local.tables[target_table]
		rules = mapping.rules_for(source_table)
		values[target_table] = [
			_map_row(row, rules, mapping.copy_unlisted, row_fields)
			for row in rows
			if isinstance(row, Mapping)
		]
	return values


def _map_row(
	row: Mapping[str, Any], rules: list[FieldRule], copy_unlisted: bool, allowed: Collection[str]
) -> dict[str, Any]:
	named = {r.source for r in rules if r.action in (FieldAction.MAP, FieldAction.SKIP, FieldAction.DEFAULT)}
	out: dict[str, Any] = {}
	if copy_unlisted:
		for key, value in row.items():
			if key in named or key in NEVER_COPIED or key.startswith("_") or isinstance(value, list):
				continue
			if key in allowed:
				out[key] = value
	mapped: set[str] = set()  # targets a Map rule wrote
	for rule in rules:
		target = rule.target_field
		if target not in allowed:
			continue
		if rule.action is FieldAction.MAP and rule.source in row and not isinstance(row[rule.source], list):
			out[target] = row[rule.source]
			mapped.add(target)
	for rule in rules:
		target = rule.target_field
		if rule.action is not FieldAction.DEFAULT or target not in allowed:
			continue
		# a Default rule maps its source (renamed or not) and fills in only when the source sends nothing
		sent = row.get(rule.source) if rule.source else None
		if sent not in (None, "") and not isinstance(sent, list) and target not in mapped:
			out[target] = sent
		if out.get(target) in (None, ""):
			out[target] = rule.value
	# last, so that a Constant holds whatever other rules (in whatever order) wrote to its field
	for rule in rules:
		if rule.action is FieldAction.CONSTANT and rule.target_field in allowed:
			out[rule.target_field] = rule.value
	return out
