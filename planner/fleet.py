"""The fleet stage: many models sharing one GPU budget. Pure (standard library only), time passed in.

After every model has planned alone, `allocate` fits the fleet's asks into the budget:

1. Every model keeps the replicas it holds, up to what it asks: moving a GPU from one model to another costs
   a cold start, during which neither has it. (Only a budget that shrank below the holds takes the least
   valuable held replicas back.) Without this, noise in the observed rates reshuffles GPUs every tick: in
   the fleet backtest that churn multiplied cold starts by seven and made the stage worse than first come,
   first served.
2. Free GPUs go first to unmet reactive floors (what observed traffic needs now; when even they exceed the
   budget, by priority and then shared: each to the model with the least share of its floor met), then to
   increments above the floors, each by value: the expected late requests the replica would prevent over
   the window it would serve in (the model's forecast quantile paths through its M/M/c queue,
   `marginal_values`; the observed rate where there is no forecast), times the model's priority, per GPU
   it takes. A model's values fall with each replica, so a heap of each model's next want merges them
   without sorting the fleet's replicas.
3. A replica a model holds above its floor goes to another model's want only when that want is worth more
   than HOLD_FACTOR times the held one (the re-warm break-even, with margin for noisy values).

Each model gets a `FleetGrant`: what it asked, what it got and, when clipped, the value of the first
replica it lost and the models that took the last GPUs; `within_grant` turns that into a BudgetLimited step.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

from planner.explain import Decision, Reason, Step
from planner.queueing import EPS, late_probability
from planner.snapshot import Snapshot
from planner.spec import PlannerSpec
from planner.stages import reactive_floor

HOLD_FACTOR = 2.0
FLOOR_PRIORITY_SCALE = 1e3  # floors' heap key: priority first (priorities are at least 0.001 apart)
# the forecast quantiles whose paths value a replica (with the probability mass each stands for): the upper
# tail matters, since a big model's headroom is worth nothing at its median and much at its p99
VALUE_LEVELS = (0.5, 0.9, 0.99)
MAX_VALUE_STEPS = 6  # forecast steps sampled per increment's value window (keeps 1,000 models per tick cheap)


@dataclass(frozen=True)
class FleetRequest:
    """One model's ask of the fleet this tick."""

    model: str
    desired: int  # replicas its own plan wants
    floor: int  # replicas the observed traffic needs now (its reactive floor)
    current: int  # replicas it holds now (warm or loading)
    gpus_per_replica: float = 1.0
    priority: float = 1.0
    # values[k]: expected late requests the (floor + k + 1)-th replica prevents; one per replica from the
    # floor up to `desired`, non-increasing
    values: tuple[float, ...] = ()
    # floor_values[k]: the same for the (k + 1)-th replica of the floor at the observed rate, which ranks the
    # floors among themselves (empty: unknown, such floor replicas go first, by priority)
    floor_values: tuple[float, ...] = ()


@dataclass(frozen=True)
class FleetGrant:
    model: str
    asked: int
    granted: int
    gpus: float
    lost_value: float | None = None  # value of the first increment it did not get (None: not clipped)
    lost_to: tuple[str, ...] = ()  # models granted increments worth more, per GPU and priority

    @property
    def clipped(self) -> bool:
        return self.granted < self.asked

    def describe(self, budget_gpus: float, asked_gpus: float) -> str:
        if not self.clipped:
            return f"fleet budget {budget_gpus:g} GPUs (asked {asked_gpus:g}): granted all {self.asked}"
        lost = (
            f"; its next replica would have prevented {self.lost_value:.1f} expected late requests, less "
            f"per GPU and priority than what {', '.join(self.lost_to)} got"
            if self.lost_value is not None and self.lost_to
            else "; even the reactive floors exceed the budget, granted by priority"
        )
        return (
            f"fleet budget {budget_gpus:g} GPUs, asked {asked_gpus:g} across the fleet: asked {self.asked} "
            f"replicas, granted {self.granted}{lost}"
        )


@dataclass(frozen=True)
class FleetAllocation:
    budget_gpus: float
    asked_gpus: float
    used_gpus: float
    grants: dict[str, FleetGrant]

    @property
    def clipped(self) -> list[str]:
        return sorted(m for m, g in self.grants.items() if g.clipped)


def allocate(requests: Sequence[FleetRequest], budget_gpus: float) -> FleetAllocation:
    asked_gpus = sum(r.desired * r.gpus_per_replica for r in requests)
    if asked_gpus <= budget_gpus + EPS:
        return FleetAllocation(budget_gpus, asked_gpus, asked_gpus, {r.model: _whole(r) for r in requests})
    by_model = {r.model: r for r in requests}
    # 1. every model keeps the replicas it holds, up to what it asks: moving a GPU costs a cold start.
    #    Only a budget that shrank below the holds makes it give up its least valuable ones.
    granted = {r.model: min(r.current, r.desired) for r in requests}
    left = budget_gpus - sum(granted[r.model] * r.gpus_per_replica for r in requests)
    if left < -EPS:
        left = _trim(by_model, granted, left)
    # 2. free GPUs: unmet floors first, then increments, each by value per GPU and priority
    wants = [(_rank(r, granted[r.model]), r.model) for r in requests if granted[r.model] < r.desired]
    heapq.heapify(wants)
    smallest = min((r.gpus_per_replica for r in requests), default=1.0)
    winners: list[tuple[float, str]] = []
    lost: list[tuple[tuple[int, float], str]] = []
    while wants and left + EPS >= smallest:
        rank, model = heapq.heappop(wants)
        r = by_model[model]
        if left + EPS < r.gpus_per_replica:
            lost.append((rank, model))  # too big for what is left; smaller asks may still fit
            continue
        granted[model] += 1
        left -= r.gpus_per_replica
        winners.append((_score(r, granted[model] - 1), model))
        if granted[model] < r.desired:
            heapq.heappush(wants, (_rank(r, granted[model]), model))
    lost.extend(wants)
    # 3. a held replica above its model's floor goes to another model's want only when that is worth more
    #    than HOLD_FACTOR times what it serves where it is
    lost.sort()
    left, preempted = _preempt(by_model, granted, lost, left, winners)
    first_lost: dict[str, float] = {}
    for _, model in lost:
        first_lost.setdefault(model, _score(by_model[model], granted[model]))
    marginal: list[tuple[float, str]] = []
    for score, model in reversed(winners):  # the last few took the last GPUs: what a clipped model lost to
        if all(m != model for _, m in marginal):
            marginal.append((score, model))
        if len(marginal) > 3:
            break
    grants: dict[str, FleetGrant] = {}
    for r in requests:
        n = granted[r.model]
        lost_value = None
        lost_to: tuple[str, ...] = ()
        if n < r.desired and math.isfinite(_value(r, n)):
            lost_value = _value(r, n)
            bar = first_lost.get(r.model, 0.0)
            lost_to = tuple(m for sc, m in marginal if sc > bar and m != r.model)[:3]
            lost_to = lost_to or tuple(sorted(preempted.get(r.model, ())))[:3]
        grants[r.model] = FleetGrant(r.model, r.desired, n, n * r.gpus_per_replica, lost_value, lost_to)
    used = sum(g.gpus for g in grants.values())
    return FleetAllocation(budget_gpus, asked_gpus, used, grants)


def _value(r: FleetRequest, k: int) -> float:
    """Expected late requests the model's (k + 1)-th replica prevents (floor replicas at the observed rate,
    the rest from the forecast)."""
    floor = min(r.floor, r.desired)
    if k < floor:
        return r.floor_values[k] if k < len(r.floor_values) else math.inf  # unknown floor value: keep it
    i = k - floor
    return r.values[i] if i < len(r.values) else 0.0


def _score(r: FleetRequest, k: int) -> float:
    """Value per GPU and priority of the model's (k + 1)-th replica."""
    return _value(r, k) * r.priority / max(r.gpus_per_replica, EPS)


def _rank(r: FleetRequest, k: int) -> tuple[int, float]:
    """Heap order of a want: floors before increments. Floors go by priority and then share the budget
    (the next floor replica to the model with the least share of its floor met): what observed traffic
    needs now is not ranked by how many requests a model serves, or a busy model's floor would starve a
    small one's. Increments go by value per GPU and priority."""
    floor = min(r.floor, r.desired)
    if k < floor:  # floors by priority, then to whoever has the least share of its floor (water-filling)
        return 0, -r.priority * FLOOR_PRIORITY_SCALE + k / floor
    score = _score(r, k)
    return 1, -(score if math.isfinite(score) else 1e300 * r.priority)


def _trim(by_model: dict[str, FleetRequest], granted: dict[str, int], left: float) -> float:
    """Release the least valuable held replicas until the holds fit the budget; returns the GPUs left."""
    heap = [(_score(by_model[m], n - 1), m) for m, n in granted.items() if n > 0]
    heapq.heapify(heap)
    while heap and left < -EPS:
        _, m = heapq.heappop(heap)
        r = by_model[m]
        granted[m] -= 1
        left += r.gpus_per_replica
        if granted[m] > 0:
            heapq.heappush(heap, (_score(r, granted[m] - 1), m))
    return left


def _preempt(
    by_model: dict[str, FleetRequest],
    granted: dict[str, int],
    lost: list[tuple[tuple[int, float], str]],
    left: float,
    winners: list[tuple[float, str]],
) -> tuple[float, dict[str, set[str]]]:
    """Move held replicas above their floors to wants worth more than HOLD_FACTOR times as much, best want
    first; `lost` keeps the wants still unmet (in place). Returns the GPUs left and, per model that gave up
    replicas, who took them."""
    held = [
        (_score(r, granted[m] - 1), m)
        for m, r in by_model.items()
        if granted[m] > min(r.floor, r.desired) and granted[m] <= r.current
    ]
    heapq.heapify(held)
    taken: dict[str, set[str]] = {}
    still: list[tuple[tuple[int, float], str]] = []
    done_models: set[str] = set()
    for _, model in lost:
        r = by_model[model]
        if model in done_models or granted[model] >= r.desired:
            continue
        want = _score(r, granted[model])  # its value, whatever its place in the queue
        moved = False
        while held and granted[model] < r.desired:
            score, victim = held[0]
            v = by_model[victim]
            if (
                victim == model
                or want <= HOLD_FACTOR * score
                or v.gpus_per_replica + left + EPS < r.gpus_per_replica
            ):
                break
            heapq.heappop(held)
            granted[victim] -= 1
            left += v.gpus_per_replica
            taken.setdefault(victim, set()).add(model)
            if granted[victim] > min(v.floor, v.desired):
                heapq.heappush(held, (_score(v, granted[victim] - 1), victim))
            if left + EPS >= r.gpus_per_replica:
                granted[model] += 1
                left -= r.gpus_per_replica
                winners.append((want, model))
                moved = True
                want = _score(r, granted[model]) if granted[model] < r.desired else 0.0
        if granted[model] < r.desired:
            still.append(((1, -want), model))
            done_models.add(model)
        elif not moved:
            done_models.add(model)
    lost[:] = still
    return left, taken


def _whole(r: FleetRequest) -> FleetGrant:
    return FleetGrant(r.model, r.desired, r.desired, r.desired * r.gpus_per_replica)


def marginal_values(
    scenarios: Sequence[tuple[float, Sequence[float]]],
    *,
    step_s: float,
    capacity_rps: float,
    slo_wait_s: float,
    start: int,
    count: int,
) -> tuple[float, ...]:
    """values[k] = expected late requests over the steps of the value window that the (start + k + 1)-th
    replica prevents, for k < count. `scenarios` are (weight, request rates per step) pairs, e.g. the
    forecast's quantile paths with the weights of the probability mass each stands for. At most
    MAX_VALUE_STEPS steps are evaluated, each standing for its share of the window."""
    if count <= 0:
        return ()
    top = start + count
    late = [0.0] * (count + 1)  # expected late requests with start + j replicas
    for weight, path in scenarios:
        if not path or weight <= 0:
            continue
        stride = max(1, math.ceil(len(path) / MAX_VALUE_STEPS))
        sampled = path[::stride]
        span_s = step_s * len(path) / len(sampled)
        for rate in sampled:
            if rate <= 0:
                continue
            offered = rate / capacity_rps
            b = 1.0  # Erlang B, carried up the server counts
            for n in range(1, top + 1):
                b = offered * b / (n + offered * b)
                if n < start:
                    continue
                p = 1.0 if n <= offered else late_probability(n, offered, b, capacity_rps, slo_wait_s)
                late[n - start] += weight * rate * span_s * p
            if start == 0:
                late[0] += weight * rate * span_s  # no replica: every request is late
    return _non_increasing([max(0.0, late[j] - late[j + 1]) for j in range(count)])


def _non_increasing(marginal: list[float]) -> tuple[float, ...]:
    """The slopes of the least concave majorant of the cumulative values (pool adjacent violators).

    Below the load the queue is unstable and the M/M/c model calls every request late whatever the count,
    so the replicas up to the stable count prevent nothing one by one and the one that makes it stable
    prevents nearly everything. Allocated replica by replica, such a model would never get its first ones.
    Averaging each rising run over the replicas it needs prices the block as a whole (the classic concave
    hull of a knapsack), so the greedy fleet stage sees what the block is worth per replica."""
    blocks: list[tuple[float, int]] = []  # (sum, count) of pooled runs, means non-increasing
    for v in marginal:
        total, n = v, 1
        while blocks and blocks[-1][0] / blocks[-1][1] <= total / n:
            t, c = blocks.pop()
            total, n = total + t, n + c
        blocks.append((total, n))
    return tuple(t / c for t, c in blocks for _ in range(c))


def quantile_weights(levels: Sequence[float]) -> list[float]:
    """The probability mass each quantile level stands for (midpoints between neighbours, 0 and 1 at the
    ends), to use a forecast's quantile paths as weighted scenarios."""
    lv = sorted(levels)
    edges = [0.0, *((a + b) / 2 for a, b in pairwise(lv)), 1.0]
    return [edges[i + 1] - edges[i] for i in range(len(lv))]


def within_grant(decision: Decision, model: str, allocation: FleetAllocation) -> Decision:
    """`model`'s decision after the fleet stage: unchanged when its grant covers it, else lowered to the
    grant with a `BudgetLimited` step that names the budget, the ask, the grant and what it lost to."""
    grant = allocation.grants.get(model)
    if grant is None or not decision.valid or decision.desired_replicas <= grant.granted:
        return decision
    step = Step(
        "fleet_budget",
        decision.desired_replicas,
        grant.granted,
        Reason.BUDGET_LIMITED,
        grant.describe(allocation.budget_gpus, allocation.asked_gpus),
    )
    return replace(
        decision,
        desired_replicas=grant.granted,
        reason=Reason.BUDGET_LIMITED,
        steps=(*decision.steps, step),
    )


def fleet_request(
    model: str,
    decision: Decision,
    snapshot: Snapshot,
    spec: PlannerSpec,
    now: float,
    *,
    gpus_per_replica: float = 1.0,
    priority: float = 1.0,
) -> FleetRequest:
    """What one model asks of the fleet after planning alone. Its floor is what its observed traffic needs
    now; without a fresh observation, or when its own plan held (invalid or missing data), the floor is its
    whole ask, so the budget never takes replicas from a model it cannot see (missing data never scales
    down). Increments above the floor are valued over the window a replica granted now would serve in,
    from T_load to the look-ahead plus the re-warm break-even."""
    desired = decision.desired_replicas
    current = snapshot.current_replicas or 0
    floor, _ = reactive_floor(snapshot, spec, now)
    held = not decision.valid or floor is None or snapshot.forecast is None or not snapshot.forecast_healthy
    floor = desired if held or floor is None else min(max(floor, spec.min_replicas), desired)
    values: tuple[float, ...] = ()
    floor_values: tuple[float, ...] = ()
    fc = snapshot.forecast
    if fc is not None and desired > 0:
        # every replica, floor or increment, valued over the window a replica granted now would serve in:
        # valuing the floor at the observed rate alone called every replica past the offered load
        # worthless, so a big model's headroom was handed to a small model's spike just before its rise
        first = max(0, int((now + spec.t_load_s - fc.origin_s) // fc.step_s))
        last = max(first + 1, int((now + spec.lookahead_s + spec.break_even_s - fc.origin_s) // fc.step_s))
        levels = sorted(fc.quantiles)
        scenarios = [
            (w, [v / fc.step_s for v in fc.quantile_values(q)[first:last]])
            for w, q in zip(quantile_weights(levels), levels, strict=True)
        ]
        every = marginal_values(
            scenarios,
            step_s=fc.step_s,
            capacity_rps=spec.capacity_rps_per_replica,
            slo_wait_s=spec.slo_wait_s,
            start=0,
            count=desired,
        )
        floor_values, values = every[:floor], every[floor:]
    rps = snapshot.observed_rps
    if not floor_values and floor > 0 and rps is not None and math.isfinite(rps) and rps > 0:
        floor_values = marginal_values(  # no forecast: the floor at the observed rate
            [(1.0, [rps] * MAX_VALUE_STEPS)],
            step_s=(spec.lookahead_s + spec.break_even_s - spec.t_load_s) / MAX_VALUE_STEPS,
            capacity_rps=spec.capacity_rps_per_replica,
            slo_wait_s=spec.slo_wait_s,
            start=0,
            count=floor,
        )
    return FleetRequest(model, desired, floor, current, gpus_per_replica, priority, values, floor_values)
