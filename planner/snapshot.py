"""Everything plan() may look at for one model at one tick."""

from __future__ import annotations

from dataclasses import dataclass

from forecaster.types import Forecast


@dataclass(frozen=True)
class Snapshot:
    """current_replicas: replicas asked for (ready or loading); ready_replicas: those serving now.
    observed_rps: the request rate over the trailing spec.reactive_window_s (a tick, or a service time when
    that is longer), observed_at_s when it was measured (None: no data).
    queue_length: requests waiting now. forecast_healthy=False: the self-check demoted the forecast.
    data_stale: why the traffic data behind the forecast is too old to trust (empty when it is fresh).
    data_dropout: why the newest traffic data reads as a telemetry dropout (forecaster/dropouts.py), not as
    idle traffic (empty when it does not)."""

    current_replicas: int | None
    ready_replicas: int | None = None
    forecast: Forecast | None = None
    forecast_healthy: bool = True
    forecast_note: str = ""
    data_stale: str = ""  # non-empty: the traffic source says its data is stale, and why
    data_dropout: str = ""  # non-empty: the newest data is an implausible run of zeros, and why
    observed_rps: float | None = None
    observed_at_s: float | None = None
    queue_length: float = 0.0
