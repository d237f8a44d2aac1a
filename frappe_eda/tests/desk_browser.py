"""The desk in a real browser, for the manual checks beside this file (``desk_xss_check``,
``desk_views_check``): Debian's Chromium driven by Playwright, logged in, every page error, console
error and failed request collected. Never imported by the app or its tests: a bench has no browser."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# The launch flags that work on a machine without network: no background connections, no GPU.
ARGS = [
	"--headless",
	"--no-sandbox",
	"--disable-gpu",
	"--disable-quic",
	"--no-first-run",
	"--disable-background-networking",
	"--disable-component-update",
	"--disable-sync",
]


@contextmanager
def desk_page(base: str, user: str, password: str) -> Iterator[tuple[Any, list[str]]]:
	"""A page logged in to the desk at ``base`` and the list its problems are appended to."""
	from playwright.sync_api import sync_playwright

	with sync_playwright() as p:
		browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
		page = browser.new_page(viewport={"width": 1600, "height": 1000})
		problems: list[str] = []
		page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
		# A failed load shows as a console error without its address: watch the responses instead.
		# socket.io is absent under `bench serve`.
		page.on(
			"console",
			lambda m: (
				m.type == "error"
				and not m.text.startswith("Failed to load resource")
				and "socket.io" not in m.text
				and problems.append(f"console: {m.text}")
			),
		)
		page.on(
			"response",
			lambda r: (
				r.status >= 400 and "/socket.io/" not in r.url and problems.append(f"HTTP {r.status} {r.url}")
			),
		)
		page.goto(f"{base}/login", wait_until="networkidle")
		page.fill("#login_email", user)
		page.fill("#login_password", password)
		page.click(".btn-login")
		page.wait_for_url(lambda u: "/login" not in u, timeout=30000)
		page.goto(f"{base}/app", wait_until="networkidle")
		page.wait_for_function("window.frappe && frappe.xcall && frappe.boot", timeout=30000)
		try:
			yield page, problems
		finally:
			browser.close()
