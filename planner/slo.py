"""Planning for the SLO itself: the fewest replicas whose expected share of late requests stays within a
risk budget.

A quantile plan provisions for "demand will be below q_alpha", which says nothing about late requests, the
thing the user asked to bound; the peak of per-step quantiles over a window is a far higher quantile of
what any replica faces, and a utilisation target adds headroom on top. Here each forecast step is a
distribution of the request rate (the forecast's quantile paths, each standing for the probability mass
around it, and a tail extrapolated past the highest level for what the levels do not show), and for n
replicas the expected share of late requests at that step is

    E[rate x late(n, rate)] / E[rate]

where late(n, rate) is the chance a request waits longer than the SLO wait: the M/M/c (Erlang C) tail when
n replicas can carry the rate, 1 when they cannot (the queue grows for the whole step). The share is
request-weighted, as the SLO counts requests. The budget is lambda x (1 - target): lambda is the operating
point, one number, and the replicas it asks for never fall as lambda falls.

Which steps a decision answers for: a replica asked for now serves from now + T_load, so a decision adds
replicas only for the steps it can reach, [now + T_load, now + T_load + tick]; and it keeps, of what it
holds, what the steps before them need, since a replica released now cannot be back before then.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

from forecaster.types import Forecast
from planner.queueing import erlang_b, wait_probability

EPS = 1e-12
# the forecast quantiles a step's distribution is read from (the feed predicts them once per refresh). The
# highest levels a forecaster reports rest on a handful of residuals each (a week of 10-minute steps holds ten
# past the 0.99 quantile), and one outage in the history makes them many times the median: read up to 0.975
LEVELS: tuple[float, ...] = (
    0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.9, 0.95, 0.975,
)  # fmt: skip
# and extrapolate the tail past it, exponential in -log(1 - u) through the two highest levels read (the tail
# of a Gumbel-type distribution), for the mass a budget of a fraction of a percent answers for (flat for a
# forecast of sparse traffic: see _distribution)
TAIL_LEVELS: tuple[float, ...] = (0.99, 0.997, 0.999, 0.9997)
TAIL_FROM: tuple[float, float] = (0.95, 0.975)
MAX_REPLICAS = 100_000


def _weights(levels: Sequence[float]) -> list[float]:
    """The probability mass each level stands for: from the midpoint below it to the midpoint above it."""
    edges = [0.0, *((a + b) / 2 for a, b in pairwise(levels)), 1.0]
    return [edges[i + 1] - edges[i] for i in range(len(levels))]


ALL_LEVELS = (*LEVELS, *TAIL_LEVELS)
WEIGHTS = tuple(_weights(ALL_LEVELS))


def step_distribution(fc: Forecast, i: int) -> tuple[tuple[float, float], ...]:
    """(probability, rate in requests/s) pairs standing for forecast step i's distribution, rates rising."""
    return fc.derived(("slo-dist", i), lambda: _distribution(fc, i))


def _paths(fc: Forecast) -> tuple[Sequence[float], ...]:
    """The LEVELS' quantile paths, looked up once per forecast rather than once per level and step."""
    return fc.derived("slo-paths", lambda: tuple(fc.quantile_values(q) for q in LEVELS))


def _distribution(fc: Forecast, i: int) -> tuple[tuple[float, float], ...]:
    step_s = fc.step_s
    rates = [max(0.0, path[i] / step_s) for path in _paths(fc)]
    for a, b in pairwise(range(len(rates))):  # quantile paths may cross by rounding: keep them monotone
        rates[b] = max(rates[b], rates[a])
    u1, u2 = TAIL_FROM
    r1, r2 = rates[LEVELS.index(u1)], rates[LEVELS.index(u2)]
    slope = (r2 - r1) / math.log((1.0 - u1) / (1.0 - u2))
    if fc.p_any is not None:
        # sparse traffic: the spread between the two levels is the step of a point mass at zero (whether
        # any request comes), not the scale of a tail; extrapolated, it asked a model whose busiest 10
        # minutes need 2 replicas for 10 of them all day. Its tail is read flat past the highest level
        slope = 0.0
    tail = [max(rates[-1], r2 + slope * math.log((1.0 - u2) / (1.0 - u))) for u in TAIL_LEVELS]
    for k in range(1, len(tail)):
        tail[k] = max(tail[k], tail[k - 1])
    return tuple(zip(WEIGHTS, (*rates, *tail), strict=True))


def late_share(dist: Sequence[tuple[float, float]], n: int, capacity_rps: float, wait_s: float) -> float:
    """Expected share of requests waiting longer than wait_s with n replicas, over the rate distribution."""
    total = sum(w * r for w, r in dist)
    if total <= 0:
        return 0.0
    late = sum(w * r * wait_probability(n, r / capacity_rps, capacity_rps, wait_s) for w, r in dist)
    return late / total


def replicas_within(
    dist: Sequence[tuple[float, float]], capacity_rps: float, wait_s: float, budget: float
) -> int:
    """The fewest replicas whose expected late share over `dist` is at most `budget`. Late shares fall as
    replicas are added, so the count is found by walking up from the count the mean rate needs, every
    level's Erlang B carried up the counts (recomputing it per candidate would be quadratic)."""
    return LateCurve(dist, capacity_rps, wait_s).replicas(budget)


class LateCurve:
    """A step's expected late (requests/s) at each replica count from the one its mean rate needs up, walked
    as far as a budget has asked: the tuning candidates of a model ask the same step for a dozen budgets,
    and each walked the same counts again (most of a first night). The counts a budget gets are the same
    as a walk of its own: the same arithmetic, and the first count within it."""

    def __init__(self, dist: Sequence[tuple[float, float]], capacity_rps: float, wait_s: float) -> None:
        self.capacity_rps, self.wait_s = capacity_rps, wait_s
        self.total = sum(w * r for w, r in dist)
        self.n0 = max(1, math.ceil(self.total / capacity_rps - EPS)) if self.total > 0 else 0
        self.lates: list[float] = []  # late at n0, n0 + 1, ...
        # of the levels that carry load (one with none adds nothing at any count): weight x rate, the offered
        # load, and its Erlang B value at the count walked last. Only these are kept: a first night holds
        # some 100,000 curves until its replays end
        self._levels = [(w * r, a) for w, r in dist if (a := r / capacity_rps) > 0]
        self._blocking: list[float] = []

    def _extend(self) -> None:
        """The late requests at the next count. queueing.late_probability's arithmetic, written out in one
        loop with Erlang B's recursion (a first night walks some 600,000 counts of 16 levels each, and the
        calls cost a third of it); a property test holds it to late_share, equal, not close."""
        n = self.n0 + len(self.lates)
        exp, cap, wait = math.exp, self.capacity_rps, self.wait_s
        blocking = self._blocking
        first = not self.lates
        late = 0.0
        for j, (wr, a) in enumerate(self._levels):
            if first:
                b = erlang_b(n, a)
                blocking.append(b)
            else:
                b = blocking[j] = a * blocking[j] / (n + a * blocking[j])
            if n <= a:
                late += wr * 1.0  # the queue grows for the whole step: every request is late
            else:
                # P(wait > t) = C(n, a) exp(-(n - a) mu t), C from B; at most 1
                p = n * b / (n - a * (1.0 - b)) * exp(-(n - a) * cap * wait)
                late += wr * (p if p < 1.0 else 1.0)
        self.lates.append(late)

    def share(self, n: int) -> float:
        """The expected late share with n replicas (n at least the mean rate's count), as late_share gives
        it: the same terms, summed in the same order."""
        if self.total <= 0:
            return 0.0
        while self.n0 + len(self.lates) <= n:
            self._extend()
        return self.lates[n - self.n0] / self.total

    def replicas(self, budget: float) -> int:
        """The fewest replicas whose expected late share is at most `budget`."""
        if self.total <= 0:
            return 0
        limit = budget * self.total + EPS
        for k, late in enumerate(self.lates):
            if late <= limit:
                return self.n0 + k
        while self.n0 + len(self.lates) < MAX_REPLICAS:
            self._extend()
            if self.lates[-1] <= limit:
                return self.n0 + len(self.lates) - 1
        return MAX_REPLICAS


def _needs(fc: Forecast, capacity_rps: float, wait_s: float, budget: float, factor: float) -> dict[int, int]:
    """The replicas each step (its rates scaled by `factor`) needs to keep its expected late share within
    the budget, by step, as far as asked: one table per forecast, budget and factor (a forecast serves the
    ticks until the next refresh; the budgets of one step share its late curve)."""
    return fc.derived(("slo-needs", capacity_rps, wait_s, budget, factor), dict)


def _curves(fc: Forecast, capacity_rps: float, wait_s: float, factor: float) -> dict[int, LateCurve]:
    """The steps' late curves (their rates scaled by `factor`), by step, once per forecast."""
    return fc.derived(("slo-curves", capacity_rps, wait_s, factor), dict)


def _curve(
    curves: dict[int, LateCurve], fc: Forecast, i: int, capacity_rps: float, wait_s: float, factor: float
) -> LateCurve:
    curve = curves.get(i)
    if curve is None:
        curve = curves[i] = LateCurve(anchored(step_distribution(fc, i), factor), capacity_rps, wait_s)
    return curve


def steps_between(fc: Forecast, start: float, end: float) -> range:
    """Indices of the forecast steps overlapping [start, end)."""
    lo = max(0, math.floor((start - fc.origin_s) / fc.step_s + EPS))
    hi = min(fc.horizon, math.ceil((end - fc.origin_s) / fc.step_s - EPS))
    return range(lo, max(lo, hi))


def peak_need(
    fc: Forecast,
    start: float,
    end: float,
    capacity_rps: float,
    wait_s: float,
    budget: float,
    factor: float = 1.0,
) -> tuple[int, float, float]:
    """(replicas, step start, that step's expected late share at them) of the neediest step overlapping
    [start, end) (the first of equals): what a decision answering for that span must hold."""
    needs = _needs(fc, capacity_rps, wait_s, budget, factor)
    curves = _curves(fc, capacity_rps, wait_s, factor)
    best, at = 0, -1
    # every tick of every tuning candidate reads a few steps here: one loop over the needs table, the curve
    # walked only for a step not in it, and the share read once, at the step that needs the most
    for i in steps_between(fc, start, end):
        n = needs.get(i)
        if n is None:
            n = needs[i] = _curve(curves, fc, i, capacity_rps, wait_s, factor).replicas(budget)
        if n > best:
            best, at = n, i
    if at < 0:
        return 0, start, 0.0
    share = _curve(curves, fc, at, capacity_rps, wait_s, factor).share(best)
    return best, fc.origin_s + at * fc.step_s, share


def anchored(dist: Sequence[tuple[float, float]], factor: float) -> tuple[tuple[float, float], ...]:
    """The distribution with every rate scaled by `factor`."""
    return tuple((w, r * factor) for w, r in dist)


def anchor_factor(fc: Forecast, now: float, observed_rps: float | None, window_s: float) -> float:
    """How far the traffic observed now runs above the forecast's mean for now (1: not above it, or no
    observation; of a sparse forecast, above its count given any request). The forecast was anchored on the
    last whole step, up to a step and a refresh ago; the observed rate is a tick old, and a rise above the
    forecast persists over minutes. Only upwards: a lull below the forecast (or a quiet half-minute at low
    traffic) never lowers the plan, and the observed count is read one Poisson standard deviation low, so
    that noise alone does not raise it either."""
    if observed_rps is None or observed_rps <= 0 or window_s <= 0:
        return 1.0
    i = math.floor((now - fc.origin_s) / fc.step_s + EPS)
    if not 0 <= i < fc.horizon:
        return 1.0
    means: dict[int, float] = fc.derived("slo-means", dict)  # read at every tick the forecast serves
    mean = means.get(i)
    if mean is None:
        mean = means[i] = sum(w * r for w, r in step_distribution(fc, i))
    if fc.p_any is not None and fc.p_any[i] > 0:
        # a request seen says requests are coming: compared with the count given any, not with a mean that
        # the chance of none dilutes (a session under way is not a rise of the whole distribution)
        mean /= min(1.0, float(fc.p_any[i]))
    if mean <= 0:
        return 1.0
    count = observed_rps * window_s
    ratio = (count - math.sqrt(count)) / (mean * window_s)
    # quantised to 2% so that the needs it leads to are computed once per forecast and factor
    return round(max(1.0, min(4.0, ratio)) * 50) / 50
