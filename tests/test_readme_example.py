"""The README's worked example is the code of ``examples/myshop``, not a copy that drifts from it.

``examples/myshop``'s own test runs the example in a real Frappe site; this one, which needs no Frappe,
checks that what a newcomer reads is what that test runs: each README block headed ``# myshop/<file>``
is in that file, and every field the README's table names is a field of its DocType and is what
``myshop.configure`` sets.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "myshop"
DOCTYPES = ROOT / "frappe_eda" / "frappe_eda" / "doctype"


def _readme_blocks() -> dict[str, str]:
	"""README code blocks whose first line is ``# myshop/<path>``, by that path, dedented."""
	blocks = {}
	for fence in re.finditer(r"^( *)```python\n(.*?)^\1```", (ROOT / "README.md").read_text(), re.S | re.M):
		indent, body = fence.group(1), fence.group(2)
		lines = [line[len(indent) :] for line in body.splitlines()]
		if lines and lines[0].startswith("# myshop/"):
			blocks[lines[0][2:]] = "\n".join(lines[1:]).rstrip() + "\n"
	return blocks


def _as_spaces(text: str) -> str:
	return text.expandtabs(4).replace("\t", "    ")


def test_readme_shows_the_example_files() -> None:
	blocks = _readme_blocks()
	assert set(blocks) == {"myshop/hooks.py", "myshop/eda_handlers.py"}
	handlers = _as_spaces((APP / "myshop" / "eda_handlers.py").read_text())
	assert blocks["myshop/eda_handlers.py"] == handlers
	hooks = (APP / "myshop" / "hooks.py").read_text().splitlines()
	for line in blocks["myshop/hooks.py"].splitlines():
		assert line in hooks, f"README's hooks.py line {line!r} is not in examples/myshop/myshop/hooks.py"


def test_readme_table_names_real_fields_with_the_values_configure_sets() -> None:
	readme = (ROOT / "README.md").read_text()
	start = readme.index("| form | field (label, `fieldname`) | value |")
	rows = re.findall(r"^\s*\| ([^|]*)\| ([^|]+), `(\w+)` \| `([^`]+)`", readme[start : start + 2000], re.M)
	assert len(rows) == 7
	configure = (APP / "myshop" / "configure.py").read_text()
	form = ""
	for name, label, fieldname, value in rows:
		form = name.strip() or form
		meta = json.loads(
			(DOCTYPES / form.lower().replace(" ", "_") / f"{form.lower().replace(' ', '_')}.json").read_text()
		)
		fields = {f["fieldname"]: f.get("label") for f in meta["fields"]}
		assert fields.get(fieldname) == label.strip(), (form, fieldname)
		if fieldname == "send_fields":
			assert '"send_fields": "description\\npriority"' in configure
		else:
			assert f'"{fieldname}": "{value}"' in configure, (fieldname, value)


def test_the_example_app_is_a_frappe_app() -> None:
	hooks = (APP / "myshop" / "hooks.py").read_text()
	assert 'app_name = "myshop"' in hooks
	assert (APP / "myshop" / "modules.txt").read_text().strip() == "Myshop"
	assert (APP / "myshop" / "myshop" / "__init__.py").exists()  # the module's folder
	assert (APP / "myshop" / "tests" / "test_walkthrough.py").exists()


def test_readme_subscription_table_names_each_field_by_its_label_and_fieldname() -> None:
	"""Every ``Label, `fieldname``` pair of the EDA Subscription table is a field of the DocType (or of its
	Field Rules child table), and every field a user sets on the form is in the table."""
	readme = (ROOT / "README.md").read_text()
	start = readme.index("an **EDA Subscription** (a script")
	table = readme[start : readme.index("Server names, everywhere", start)]
	named = re.findall(r"([A-Z][A-Za-z ]+), `(\w+)`", table)
	subscription = json.loads((DOCTYPES / "eda_subscription" / "eda_subscription.json").read_text())
	rules = json.loads((DOCTYPES / "eda_subscription_field" / "eda_subscription_field.json").read_text())
	labels = {f["fieldname"]: f.get("label") for f in subscription["fields"] + rules["fields"]}
	for label, fieldname in named:
		assert labels.get(fieldname) == label.strip(), (label, fieldname)
	user_set = {
		f["fieldname"]
		for f in subscription["fields"]
		if f["fieldtype"] not in ("Section Break", "Column Break")
		and not f.get("read_only")
		and not f["fieldname"].startswith(("last_reconcile", "reconcile_state", "reconcile_runs"))
		and f["fieldname"] not in ("enabled", "description")
	}
	assert user_set <= {fieldname for _label, fieldname in named}, user_set - {f for _l, f in named}


def test_readme_lists_every_installed_doctype() -> None:
	readme = " ".join((ROOT / "README.md").read_text().split())
	start = readme.index("Installing creates the DocTypes")
	listed = readme[start : readme.index("the roles", start)]
	for folder in sorted(p for p in DOCTYPES.iterdir() if (p / f"{p.name}.json").exists()):
		name = json.loads((folder / f"{folder.name}.json").read_text())["name"]
		assert f"*{name}*" in listed, name
