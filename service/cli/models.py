"""`prewarm models`: the forecasting models, one line each."""

from __future__ import annotations

import sys

from service.cli.common import out


def list_models() -> None:
    """List the forecasting models and what each is for."""
    from forecaster.models import MODELS

    for alias, factory in MODELS.items():
        # a model module's docstring opens with what the model is for
        doc = (sys.modules[type(factory()).__module__].__doc__ or "").strip().splitlines()[0]
        out.print(f"{alias:24s} {doc}", highlight=False)
    out.print(f"{'auto':24s} per-series choice by rolling-origin CV, split-conformal calibrated quantiles")
    out.print(f"{'auto-fast':24s} auto among the vectorised models only (profile and the seasonal naives)")
