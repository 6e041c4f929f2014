"""Scale to zero: when a model whose floor is zero (min_replicas 0) may hold no replica at all.

A model at zero makes every request that arrives before a replica is warm again wait: the first request of a
session and every one in the T_load after it. Releasing the last replica now is safe only if no request
comes before a replica released now could be back *and* have paid for its cold start: the window
[now, now + T_load + tick + break-even]. At zero, a replica asked for now serves from now + T_load, one
asked for at the next tick a tick later: asking now answers for [now + T_load, now + T_load + tick]. So a
model holds none when the chance of any request in its window is within the operating point's late budget
b, and otherwise keeps (or pre-warms) one, T_load ahead of the requests the forecast expects. The same
split (add for the steps a decision can reach, keep for the steps before them) is the SLO stage's
(planner/slo.py). b is the knob that bounds the late share per step above zero: at zero, the chance of a
request is the chance of a late one. Tuning walks b like every other knob, so the realised cold-start
share, not b itself, is what the SLO is held to.

The gate is checked whatever the SLO stage asks above zero: that stage bounds the share of a step's
requests that are late *given* they come, which for a model that sees a burst a day asks for the burst's
replicas all day; whether any request comes at all is this gate's question.

The chance is read from the forecast's `p_any` where a model of sparse traffic gives it (the probability of
at least one request per step; a part of a step by the count expected given any, its requests spread
evenly over the step); else from its mean, as Poisson arrivals: 1 - exp(-expected requests).

Holding one, the window starts now, and the question is whether a request comes given that none has since
the forecast's origin: where the model also gives `p_none` (no request from the origin through each step),
that chance is 1 - p_none(end) / p_none(now). Requests come in sessions: after one ends, the steps' own
chances still count the session possibly going on, and their product would hold the replica as if each
step were a fresh draw. A request that did come since the origin (a forecast is refreshed every few
minutes) was seen by a tick, whose reactive floor of one the scale-down stabilisation keeps for its window.
"""

from __future__ import annotations

import math

from forecaster.types import Forecast
from planner.spec import PlannerSpec

EPS = 1e-12


def chance_of_request(fc: Forecast, start: float, end: float, *, given_none: bool = False) -> float:
    """The chance that at least one request arrives in [start, end), by the forecast; each step counted
    for the part of it inside the span (arrivals spread evenly within a step). With `given_none` and a
    forecast that gives `p_none`: given that none arrived from its origin to `start`. A span past the
    forecast's end is certain to see one: nothing says otherwise, and at zero that would be a cold start
    unplanned."""
    if end <= start:
        return 0.0
    fc_end = fc.origin_s + fc.horizon * fc.step_s
    if end > fc_end + EPS or start < fc.origin_s - fc.step_s - EPS:
        return 1.0
    if given_none and fc.p_none is not None:
        return fc.derived(("p-any-given-none", start, end), lambda: _chance_given_none(fc, start, end))
    return fc.derived(("p-any", start, end), lambda: _chance(fc, start, end))


def _chance_given_none(fc: Forecast, start: float, end: float) -> float:
    p_none = fc.p_none
    assert p_none is not None
    # once per forecast: each tick asks of a new window
    log_none: list[float] = fc.derived(
        "log-p-none", lambda: [math.log(max(1e-300, min(1.0, float(v)))) for v in p_none]
    )

    def through(t: float) -> float:  # log P(no request from the origin to t), even within a step
        x = max(0.0, (t - fc.origin_s) / fc.step_s)
        i = min(math.floor(x + EPS), fc.horizon)
        before = log_none[i - 1] if i > 0 else 0.0
        if i >= fc.horizon:
            return before
        return before + (x - i) * (log_none[i] - before)

    lo = through(start)
    if lo <= math.log(1e-300) + 1:
        return 1.0  # a request since the origin was all but certain: nothing to condition on
    return -math.expm1(through(end) - lo)


def _chance(fc: Forecast, start: float, end: float) -> float:
    lo = max(0, math.floor((start - fc.origin_s) / fc.step_s + EPS))
    hi = min(fc.horizon, math.ceil((end - fc.origin_s) / fc.step_s - EPS))
    log_none = 0.0  # log of the chance that no step sees a request
    for i in range(lo, hi):
        t0 = fc.origin_s + i * fc.step_s
        share = (min(end, t0 + fc.step_s) - max(start, t0)) / fc.step_s
        if share <= 0:
            continue
        if fc.p_any is not None:
            p = min(1.0, max(0.0, float(fc.p_any[i])))
            if share < 1.0 and p > 0.0:
                # a part of a step sees one of the step's requests (spread evenly) with the chance that
                # not all of them fall outside it: with c requests given any, 1 - (1 - share)^c
                c = max(1.0, float(fc.mean[i]) / p)
                p *= -math.expm1(c * math.log1p(-share))
            if p >= 1.0:
                return 1.0
            log_none += math.log1p(-p)
        else:
            log_none -= share * max(0.0, float(fc.mean[i]))
    return -math.expm1(log_none)


def zero_window(spec: PlannerSpec, now: float, current: int) -> tuple[float, float]:
    """The span whose requests decide between none and one replica. Holding one: until a replica released
    now could be warm again, plus the break-even time a re-warm must be worth. At zero: only the span a
    replica asked for now serves and one asked for a tick later does not, [now + T_load, now + T_load +
    tick]; requests sooner than that meet a cold start whatever is asked now, and later ones can wait for
    the next tick's decision. So a pre-warm answers for where the forecast concentrates requests (a batch
    at 02:00), not for a chance spread thinly over hours, which holding after a request already covers."""
    if current >= 1:
        return now, now + spec.lookahead_s + spec.break_even_s
    return now + spec.t_load_s, now + spec.lookahead_s


def may_hold_none(fc: Forecast, spec: PlannerSpec, now: float, current: int) -> tuple[bool, float]:
    """(whether the model may hold no replica now, the chance of a request in its zero window). Only a
    model whose floor is zero and whose operating point plans for the SLO (a late budget) ever may."""
    if spec.min_replicas > 0 or spec.late_budget is None:
        return False, 1.0
    p = chance_of_request(fc, *zero_window(spec, now, current), given_none=current >= 1)
    return p <= spec.late_budget, p
