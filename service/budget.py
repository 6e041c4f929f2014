"""Where the fleet's GPU budget comes from: a number in the config, or a namespace ResourceQuota's hard
limit read through the Kubernetes actuator (re-read every `refresh_s`, so raising the quota raises the
budget without a restart).

A quota that cannot be read keeps the last budget read and says why; before the first read succeeds there
is no budget, each model plans alone, and /readyz says so. Either way the tick goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actuator.errors import ActuatorError


@dataclass
class FixedBudget:
    gpus: float
    error: str = ""  # a number in the config cannot fail to read

    def read(self, now_s: float) -> float | None:
        return self.gpus

    def as_dict(self) -> dict[str, Any]:
        return {"budget_gpus": self.gpus, "source": "fleet.gpu_budget", "error": self.error}


@dataclass
class QuotaBudget:
    """The hard limit of a ResourceQuota; `reader` reads it (actuator/kubernetes.py gpu_quota)."""

    reader: Callable[[], float]
    source: str  # "ResourceQuota serving/gpu-quota requests.nvidia.com/gpu", for people
    refresh_s: float = 60.0
    gpus: float | None = None
    read_at_s: float = -math.inf
    error: str = ""
    _tried_s: float = field(default=-math.inf, repr=False)

    def read(self, now_s: float) -> float | None:
        if now_s - self._tried_s >= self.refresh_s:
            self._tried_s = now_s
            try:
                self.gpus, self.read_at_s, self.error = self.reader(), now_s, ""
            except ActuatorError as exc:
                kept = f"; keeping {self.gpus:g} GPUs from the last read" if self.gpus is not None else ""
                self.error = f"{exc}{kept}"
        return self.gpus

    def as_dict(self) -> dict[str, Any]:
        return {"budget_gpus": self.gpus, "source": self.source, "error": self.error}


BudgetSource = FixedBudget | QuotaBudget
