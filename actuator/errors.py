"""What can go wrong when applying a decision, typed by what the caller should do next."""

from __future__ import annotations


class ActuatorError(Exception):
    """Base class. `message` is one sentence a person can act on."""


class TransientError(ActuatorError):
    """Worth retrying after `delay_s` (5xx, timeouts, a lost connection, conflicts that kept recurring)."""

    def __init__(self, message: str, delay_s: float = 5.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class PermanentError(ActuatorError):
    """Retrying cannot help (the target does not exist, RBAC forbids the call, the config is contradictory):
    stop acting on this model and say why in its decisions and /readyz until the config changes."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
