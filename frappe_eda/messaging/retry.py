"""When a failed message is tried again, and when it is given up on.

Delays are served by the broker, not by worker memory: each delay is a tier queue whose messages
expire back into the work queue (see ``topology``). So the policy only has to name the tier for an
attempt; a worker restart loses no scheduled retry.
"""

from __future__ import annotations

from dataclasses import dataclass

from frappe_eda.messaging.errors import ConfigurationError

DEFAULT_DELAYS = (1.0, 5.0, 30.0, 120.0, 600.0)


@dataclass(frozen=True)
class RetryPolicy:
	"""``max_attempts`` counts the first try; ``delays[i]`` is the wait after the (i+1)-th failure.

	When there are more retries than delays the last delay repeats, so a policy with one delay is a
	fixed back-off and the defaults grow from a second to ten minutes.
	"""

	max_attempts: int = 5
	delays: tuple[float, ...] = DEFAULT_DELAYS

	def __post_init__(self) -> None:
		if self.max_attempts < 1:
			raise ConfigurationError(f"max_attempts is {self.max_attempts}; it counts the first try, so >= 1")
		if self.max_attempts > 1 and not self.delays:
			raise ConfigurationError("a policy that retries needs at least one delay")
		# "not >=" also refuses NaN; under a millisecond the broker's TTL (whole ms) would be 0.
		if any(not d >= 0.001 for d in self.delays):
			raise ConfigurationError(f"retry delays must be at least 0.001 seconds, got {self.delays}")

	def should_retry(self, attempt: int) -> bool:
		"""``attempt`` is the number of the try that just failed (1 for the first)."""
		return attempt < self.max_attempts

	def delay_after(self, attempt: int) -> float:
		return self.delays[min(attempt, len(self.delays)) - 1]

	def tiers(self) -> tuple[float, ...]:
		"""The distinct delays this policy can ask for, i.e. the delay queues a consumer needs."""
		used = {self.delay_after(a) for a in range(1, self.max_attempts)}
		return tuple(sorted(used))


def tier_name(delay_seconds: float) -> str:
	"""A readable, stable suffix for a delay queue: 500ms, 5s, 2m, 1h."""
	ms = round(delay_seconds * 1000)
	for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
		if ms % size == 0:
			return f"{ms // size}{unit}"
	return f"{ms}ms"
