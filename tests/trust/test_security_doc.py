"""docs/security.md's Python example runs as shown."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def test_the_python_example_runs() -> None:
	blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
	assert blocks, "docs/security.md shows Python"
	for block in blocks:
		exec(compile(block, str(PAGE), "exec"), {})
