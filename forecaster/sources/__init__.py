"""Where traffic comes from: trace files, the seeded synthetic generator (and, later, Prometheus)."""

from forecaster.sources.base import SourceError, TrafficSource

__all__ = ["SourceError", "TrafficSource"]
