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
