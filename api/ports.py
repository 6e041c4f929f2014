"""What the API may ask of the service: a narrow, read-mostly port (the service implements it; tests can
hand-write a fake)."""

from __future__ import annotations

from typing import Any, Protocol


class UnknownModel(KeyError):
    pass


class TokenSource(Protocol):
    """Where the mutating endpoints' bearer token comes from, asked on every such request (a token file
    mounted from a Secret may appear or rotate while the service runs)."""

    def token(self) -> str | None:
        """The token in force, or None: the mutating endpoints are refused."""
        ...

    def why_none(self) -> str:
        """Why there is no token (said in the 403 and in /readyz)."""
        ...


class ServiceView(Protocol):
    def models(self) -> list[dict[str, Any]]: ...

    def model(self, name: str) -> dict[str, Any]:
        """Raises UnknownModel."""
        ...

    def forecast(self, name: str) -> dict[str, Any] | None: ...

    def history(self, name: str, since_s: float) -> dict[str, Any]: ...

    def decisions(self, name: str, since_s: float | None, limit: int) -> list[dict[str, Any]]: ...

    def decision(self, decision_id: int) -> dict[str, Any] | None: ...

    def latest_backtest(self, name: str) -> dict[str, Any] | None: ...

    def tuning(self, name: str) -> dict[str, Any] | None:
        """The model's SLO, its operating point and the tuning run that chose it (None: no target set)."""
        ...

    def fleet(self) -> dict[str, Any]:
        """The fleet stage's newest allocation of the shared GPU budget (budget_gpus None: no budget)."""
        ...

    def set_mode(self, name: str, mode: str) -> dict[str, Any]: ...

    def set_paused(self, name: str, paused: bool) -> dict[str, Any]: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    def metrics(self) -> list[tuple[str, str, dict[str, str], float]]:
        """(name, help, labels, value) samples, every name starting with prewarm_."""
        ...

    def now_s(self) -> float: ...
