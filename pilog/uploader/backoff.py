"""Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
Jitter"): each wait is uniform in [0, min(cap, base * 2**attempt)], so a fleet of devices
coming back after an outage does not hammer the receiver in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

RETRY_AFTER_MAX_S = 3600.0  # a receiver asking for more than an hour is misconfigured


@dataclass
class Backoff:
    base_s: float
    cap_s: float
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_wait(self, retry_after_s: float | None = None) -> float:
        """Seconds to wait before the next attempt; `Retry-After` wins when given."""
        self.attempt += 1
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), RETRY_AFTER_MAX_S)
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.attempt - 1, 32))
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0
