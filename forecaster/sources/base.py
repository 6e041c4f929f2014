"""The narrow port every traffic source implements."""

from __future__ import annotations

from typing import Protocol

from forecaster.types import TrafficSeries


class SourceError(Exception):
    """A source could not give a series; the message says what and where, for a person to act on."""


class TrafficSource(Protocol):
    def names(self) -> list[str]:
        """The series this source can give, sorted."""
        ...

    def load(self, name: str) -> TrafficSeries:
        """The whole history of one series. Raises SourceError for an unknown name."""
        ...
