"""A handler for the ``bench eda`` command tests: its queue and exchange come from the environment
(``EDA_CLI_TEST_PREFIX``), so each test run has queues of its own."""

import os

from frappe_eda.messaging import subscribe

PREFIX = os.environ.get("EDA_CLI_TEST_PREFIX", "eda-cli")


@subscribe(
	[f"{PREFIX}.created", f"{PREFIX}.#"],
	queue=f"{PREFIX}.work",
	exchange=f"{PREFIX}.events",
	retry_delays=[0.5, 2],
)
def on_created(message) -> None:
	"""Accepts everything: the tests look at what the worker prints, not at what it does."""
