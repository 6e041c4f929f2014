"""A Ray Serve application for the actuator test: each replica's constructor sleeps like a model loading its
weights (COLD_START_S), so a cold start is long enough to measure."""

from __future__ import annotations

import os
import time

from ray import serve

COLD_START_S = float(os.environ.get("PREWARM_TEST_COLD_START_S", "3"))


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Model:
    def __init__(self) -> None:
        time.sleep(COLD_START_S)  # stands in for pulling and loading weights

    def __call__(self, request: object) -> str:
        return "ok"


app = Model.bind()
