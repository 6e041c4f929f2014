"""The fleet stage: many models sharing one GPU budget. Pure (standard library only), time passed in.

After every model has planned alone, `allocate` fits the fleet's asks into the budget. Its objective is per
model, in SLO terms, and its first rule is a guarantee, not a weight:

1. **A model's reactive floor is never another model's headroom.** The floor is what the reactive
   autoscaler the model replaces would hold for it now: the replicas its observed traffic needs, held
   through the reactive scale-down stabilisation window (`FleetRequest.floor_hold_s`). Unmet floors take
   free GPUs first and then the held replicas above other models' floors (their forecast headroom),
   whatever that headroom is worth. Floors are valued above every increment and are cut only when the
   floors alone exceed the budget; then they are shared, by priority and then each next floor replica to
   the model with the least share of its floor met (a busy model's floor does not starve a quiet one's).
2. Every model keeps the replicas it holds, up to what it asks: moving a GPU costs a cold start, during
   which neither model has it. (Only a budget that shrank below the holds takes held replicas back:
   headroom first, the least valuable first, then floors by the same sharing.) Without this, noise in the
   observed rates reshuffled GPUs every tick: in the fleet backtest that churn multiplied cold starts by
   seven and made the stage worse than first come, first served.
3. Free GPUs above the floors go to increments by the **SLO deficit they close** per GPU, times priority.
   A model's deficit is its expected late share over the window a replica granted now would serve in
   (its forecast's quantile paths through its M/M/c queue, `marginal_values`) above its late budget
   (1 - `slo_target`); an increment's value is the part of the deficit it closes, in units of that budget.
   Increments that close a deficit come first; once every affordable deficit is closed, the rest go by the
   late share they prevent, in the same units. So a model far outside its target gains much from a GPU
   however small its traffic, and one within it gains little however big (ranking by late requests
   prevented let the biggest model take the fleet).
4. A held replica above its model's floor goes to another model's increment only when that increment is
   worth more than HOLD_FACTOR times as much (the re-warm break-even, with margin for noisy values),
   whichever tier either is in: a move costs the same cold start.
5. **One-tick spikes are damped**: held replicas move (rules 1 and 4) only to replicas the model also asked
   for on the previous tick (`FleetState`), so a replica is not torn from one model for a spike that is
   over before the moved replica would be warm. Free GPUs serve a want at once. A floor that rises into
   what the model already asked for (a rise its forecast saw coming) is not new and moves replicas at once;
   one that jumps past its last ask (a spike no forecast saw) waits a tick. (Measured on the 13-series
   fleet at 70% of the need: damping by the previous floor instead cost 0.19 points of the fleet's
   violation rate, 1.34% against 1.15%.)

Each model gets a `FleetGrant`: what it asked, what it got, its expected late share at the grant against
its budget and, when clipped, what its next replica would have prevented and who took the last GPUs;
`within_grant` turns that into a BudgetLimited step.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import accumulate, pairwise
from typing import NamedTuple

from planner.explain import Decision, Reason, Step
from planner.queueing import EPS, late_probability
from planner.snapshot import Snapshot
from planner.spec import PlannerSpec
from planner.stages import reactive_floor

HOLD_FACTOR = 2.0
DEFAULT_SLO_TARGET = 0.99  # a model that states no target is valued against this one
FLOOR_PRIORITY_SCALE = 1e3  # floors' heap key: priority first (priorities are at least 0.001 apart)
# the forecast quantiles whose paths value a replica (with the probability mass each stands for): the upper
# tail matters, since a big model's headroom is worth nothing at its median and much at its p99
VALUE_LEVELS = (0.5, 0.9, 0.99)
MAX_VALUE_STEPS = 6  # forecast steps sampled per increment's value window (keeps 1,000 models per tick cheap)
FLOOR, DEFICIT, SURPLUS = 0, 1, 2  # a want's tier: a floor replica, one that closes SLO deficit, the rest


@dataclass(frozen=True)
class FleetRequest:
    """One model's ask of the fleet this tick."""

    model: str
    desired: int  # replicas its own plan wants
    floor: int  # replicas its observed traffic needs now (its reactive floor)
    current: int  # replicas it holds now (warm or loading)
    gpus_per_replica: float = 1.0
    priority: float = 1.0
    # values[k]: expected late requests the (floor + k + 1)-th replica prevents over the value window; one
    # per replica from the floor up to `desired`, non-increasing
    values: tuple[float, ...] = ()
    # floor_values[k]: the same for the (k + 1)-th replica of the floor
    floor_values: tuple[float, ...] = ()
    # requests expected over the value window (every one is late with no replica): with the values, the
    # model's expected late share at each replica count
    expected_requests: float = 0.0
    slo_target: float | None = None  # None: DEFAULT_SLO_TARGET
    floor_hold_s: float = 0.0  # the reactive scale-down stabilisation window its floor is held through

    @property
    def late_budget(self) -> float:
        """The share of requests the model's SLO lets be late."""
        return 1.0 - (self.slo_target if self.slo_target is not None else DEFAULT_SLO_TARGET)

    @cached_property
    def late_curve(self) -> tuple[float, ...]:
        """late_curve[k]: expected late requests over the value window with k replicas, k = 0..desired."""
        floor = min(self.floor, self.desired)
        below = (*self.floor_values[:floor], *(0.0,) * max(0, floor - len(self.floor_values)))
        prevented = accumulate((*below, *self.values[: max(0, self.desired - floor)]), initial=0.0)
        return tuple(max(0.0, self.expected_requests - p) for p in prevented)

    def late_share(self, replicas: int) -> float | None:
        """Expected share of its requests late with `replicas` (None: no requests expected, or unknown)."""
        curve = self.late_curve
        if self.expected_requests <= 0 or not curve:
            return None
        return curve[min(max(replicas, 0), len(curve) - 1)] / self.expected_requests


class FleetGrant(NamedTuple):
    """One model's share of the budget (a named tuple: the stage builds one per model per tick)."""

    model: str
    asked: int
    granted: int
    gpus: float
    floor: int = 0  # the reactive floor it was guaranteed (as held through the stabilisation window)
    late_budget: float = 1.0 - DEFAULT_SLO_TARGET
    late_share: float | None = None  # its expected late share at the grant (None: no traffic expected)
    lost_share: float | None = None  # late share its first missing replica would have prevented
    lost_to: tuple[str, ...] = ()  # models granted wants that ranked above its first missing replica
    damped: bool = False  # a want that held replicas would have served is new this tick (rule 5)
    floors_exceed: bool = False  # the fleet's floors alone exceed the budget

    @property
    def clipped(self) -> bool:
        return self.granted < self.asked

    def describe(self, budget_gpus: float, asked_gpus: float) -> str:
        if not self.clipped:
            return f"fleet budget {budget_gpus:g} GPUs (asked {asked_gpus:g}): granted all {self.asked}"
        head = (
            f"fleet budget {budget_gpus:g} GPUs, asked {asked_gpus:g} across the fleet: asked {self.asked} "
            f"replicas, granted {self.granted}"
        )
        if self.granted < self.floor:
            if self.damped:
                return (
                    f"{head}; its reactive floor rose to {self.floor} this tick: other models' warm replicas "
                    "move to it if it still needs them on the next tick (a one-tick spike is over before a "
                    "moved replica is warm)"
                )
            if self.floors_exceed:
                return f"{head}; even the reactive floors exceed the budget, shared by priority and share met"
            return f"{head}; below its reactive floor of {self.floor}: no free GPU or movable replica fits it"
        parts = [head]
        if self.late_share is not None:
            parts.append(
                f"expected late share {self.late_share:.2%} against its late budget {self.late_budget:.2%}"
            )
        if self.lost_share is not None and self.lost_to:
            parts.append(
                f"its next replica would have kept {self.lost_share:.2%} of its requests from being late, "
                f"{self.lost_share / self.late_budget:.2g}x its budget, worth less per GPU and priority "
                f"than what {', '.join(self.lost_to)} got"
            )
        if self.damped:
            parts.append(
                "its ask rose this tick: other models' warm replicas move to it only if it still asks on "
                "the next tick (a one-tick spike is over before a moved replica is warm)"
            )
        return "; ".join(parts)


@dataclass(frozen=True)
class FleetState:
    """What one allocation leaves for the next, per model: its previous ask (desired replicas), which damps
    one-tick spikes, and its recent reactive floors (time, replicas) within its hold window. Pure data,
    serialisable; a restart that loses it damps one more tick and holds floors from then on."""

    asks: Mapping[str, int] = field(default_factory=dict)
    floors: Mapping[str, tuple[tuple[float, int], ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetAllocation:
    budget_gpus: float
    asked_gpus: float
    used_gpus: float
    grants: dict[str, FleetGrant]
    state: FleetState = field(default_factory=FleetState)  # thread into the next tick's allocate

    @property
    def clipped(self) -> list[str]:
        return sorted(m for m, g in self.grants.items() if g.clipped)


class _Model:
    """One request inside `allocate`: its guaranteed floor, the wants that persisted from the last tick,
    and what it is granted so far."""

    __slots__ = (
        "allowed",
        "curve",
        "floor",
        "granted",
        "keys",
        "r",
        "scale",
        "steady",
    )

    def __init__(self, r: FleetRequest, floor: int, prev: int | None) -> None:
        self.r = r
        self.floor = floor
        held = min(r.current, r.desired)
        # the replicas it asked for on the last tick too (none known: nothing it asks may move held ones)
        self.steady = min(r.desired, prev) if prev is not None else held
        self.granted = held
        self.curve = r.late_curve
        self.allowed = r.late_budget * r.expected_requests  # late requests its SLO allows over the window
        self.scale = r.priority / (self.allowed * max(r.gpus_per_replica, EPS)) if self.allowed > 0 else 0.0
        self.keys: dict[int, tuple[int, float]] = {}  # key(k), computed once per allocation

    def key(self, k: int) -> tuple[int, float]:
        """Rank of its (k + 1)-th replica, lower first: floors by priority, then to the least share of the
        floor met; above the floor, replicas that close SLO deficit (its expected late requests above what
        its SLO allows) before the rest, each by its value negated: the deficit it closes, or failing that
        the late requests it prevents, in units of the model's late budget, per GPU and times priority.
        Called once per replica the stage weighs, so written flat."""
        got = self.keys.get(k)
        if got is None:
            if k < self.floor:
                got = FLOOR, -self.r.priority * FLOOR_PRIORITY_SCALE + k / self.floor
            else:
                curve = self.curve
                if k + 1 >= len(curve) or self.scale <= 0:
                    got = SURPLUS, -0.0
                else:
                    before, after, allowed = curve[k], curve[k + 1], self.allowed
                    closed = before - (after if after > allowed else allowed)  # deficit above `allowed`
                    if closed > EPS:
                        got = DEFICIT, -closed * self.scale
                    else:
                        got = SURPLUS, (after - before) * self.scale
            self.keys[k] = got
        return got

    def lost_share(self) -> float | None:
        curve, e = self.curve, self.r.expected_requests
        k = self.granted
        if e <= 0 or k + 1 >= len(curve):
            return None
        return (curve[k] - curve[k + 1]) / e


def allocate(
    requests: Sequence[FleetRequest],
    budget_gpus: float,
    state: FleetState | None = None,
    now: float | None = None,
) -> FleetAllocation:
    """Fit the fleet's asks into `budget_gpus` by the rules of the module docstring. `state` is what the
    previous tick's allocation left (None: a first tick, on which no held replica moves and no floor is
    held from before); `now` is the tick's time, for the floors' hold windows."""
    state = state if state is not None else FleetState()
    recent = {r.model: _recent_floors(r, state, now) for r in requests}
    models = [_Model(r, _held_floor(r, recent[r.model]), state.asks.get(r.model)) for r in requests]
    next_state = _next_state(models, recent, state, now)
    asked_gpus = sum(r.desired * r.gpus_per_replica for r in requests)
    if asked_gpus <= budget_gpus + EPS:
        for m in models:
            m.granted = m.r.desired
        return FleetAllocation(
            budget_gpus,
            asked_gpus,
            asked_gpus,
            _grants(models, budget_gpus, [], {}, set()),
            next_state,
        )
    # 2. every model keeps the replicas it holds, up to what it asks (a budget that shrank takes some back)
    left = budget_gpus - sum(m.granted * m.r.gpus_per_replica for m in models)
    if left < -EPS:
        left = _trim(models, left)
    # 1, 3. free GPUs: unmet floors first, then increments by tier and SLO value per GPU and priority
    winners: list[tuple[tuple[int, float], str]] = []
    wants = [(m.key(m.granted), i) for i, m in enumerate(models) if m.granted < m.r.desired]
    left, unmet = _fill(models, wants, left, winners)
    # 1, 4, 5. held headroom moves to floors, and to increments worth a cold start, for wants that persisted
    left, taken, damped = _move_held(models, unmet, left, winners)
    # GPUs freed by moves that no want of the moving model fitted go to the wants that still fit
    _fill(
        models,
        [(models[i].key(models[i].granted), i) for _, i in unmet if models[i].granted < models[i].r.desired],
        left,
        winners,
    )
    grants = _grants(models, budget_gpus, winners, taken, damped)
    used = sum(g.gpus for g in grants.values())
    return FleetAllocation(budget_gpus, asked_gpus, used, grants, next_state)


def _recent_floors(r: FleetRequest, state: FleetState, now: float | None) -> tuple[tuple[float, int], ...]:
    """The model's floors (time, replicas) still inside its hold window at `now` (none without a time)."""
    if now is None or r.floor_hold_s <= 0:
        return ()
    return tuple((t, n) for t, n in state.floors.get(r.model, ()) if t > now - r.floor_hold_s + EPS)


def _held_floor(r: FleetRequest, recent: tuple[tuple[float, int], ...]) -> int:
    """The floor the reactive autoscaler would hold now: the observed floor, or while a lower one is in its
    stabilisation window, the highest floor of the window (never above what the model holds or asks)."""
    floor = min(r.floor, r.desired)
    highest = max((n for _, n in recent), default=floor)
    if highest <= floor:
        return floor
    return min(r.desired, max(floor, min(r.current, highest)))


def _next_state(
    models: Sequence[_Model],
    recent: Mapping[str, tuple[tuple[float, int], ...]],
    state: FleetState,
    now: float | None,
) -> FleetState:
    asks = {m.r.model: m.r.desired for m in models}
    if now is None:
        return FleetState(asks, state.floors)
    floors = {
        m.r.model: (*recent[m.r.model], (now, min(m.r.floor, m.r.desired)))
        for m in models
        if m.r.floor_hold_s > 0
    }
    return FleetState(asks, floors)


def _worst_first(key: tuple[int, float]) -> tuple[int, float]:
    """Heap order that pops the lowest-ranked replica first."""
    return -key[0], -key[1]


def _fill(
    models: Sequence[_Model],
    wants: list[tuple[tuple[int, float], int]],
    left: float,
    winners: list[tuple[tuple[int, float], str]],
) -> tuple[float, list[tuple[tuple[int, float], int]]]:
    """Free GPUs to the best-ranked wants (a heap of each model's next want merges the models' falling
    values without sorting the fleet's replicas); returns the GPUs left and the wants unmet, best first."""
    heapq.heapify(wants)
    smallest = min((m.r.gpus_per_replica for m in models), default=1.0)
    unmet: list[tuple[tuple[int, float], int]] = []
    while wants and left + EPS >= smallest:
        key, i = heapq.heappop(wants)
        m = models[i]
        if left + EPS < m.r.gpus_per_replica:
            unmet.append((key, i))  # too big for what is left; smaller asks may still fit
            continue
        m.granted += 1
        left -= m.r.gpus_per_replica
        winners.append((key, m.r.model))
        if m.granted < m.r.desired:
            heapq.heappush(wants, (m.key(m.granted), i))
    unmet.extend(wants)
    unmet.sort()
    return left, unmet


def _trim(models: Sequence[_Model], left: float) -> float:
    """Release held replicas, the lowest-ranked first (headroom before floors), until the holds fit."""
    heap = [(_worst_first(m.key(m.granted - 1)), i) for i, m in enumerate(models) if m.granted > 0]
    heapq.heapify(heap)
    while heap and left < -EPS:
        i = heapq.heappop(heap)[1]
        m = models[i]
        m.granted -= 1
        left += m.r.gpus_per_replica
        if m.granted > 0:
            heapq.heappush(heap, (_worst_first(m.key(m.granted - 1)), i))
    return left


def _move_held(
    models: Sequence[_Model],
    unmet: list[tuple[tuple[int, float], int]],
    left: float,
    winners: list[tuple[tuple[int, float], str]],
) -> tuple[float, dict[str, set[str]], set[str]]:
    """Held replicas above their models' floors, the lowest-ranked first, move to the unmet wants that
    outrank them and that the wanting model also asked for on the last tick. A model that takes a
    replica gives none up. Returns the GPUs left, who took replicas from whom, and the models whose new
    wants were damped."""
    # (-tier, value, model): the lowest-ranked held replica on top
    held: list[tuple[int, float, int]] = []
    for i, m in enumerate(models):
        if m.floor < m.granted <= m.r.current:
            tier, neg = m.key(m.granted - 1)
            held.append((-tier, -neg, i))
    heapq.heapify(held)
    taken: dict[str, set[str]] = {}
    damped: set[str] = set()
    gaining: set[int] = set()
    for _, i in unmet:
        m = models[i]
        r = m.r
        need = r.gpus_per_replica
        while m.granted < r.desired:
            k = m.granted
            want_tier, want_neg = want = m.key(k)
            if left + EPS >= need:  # GPUs moves freed (enough for the want, or more: a bigger replica moved)
                m.granted += 1
                left -= need
                winners.append((want, r.model))
                continue
            steady = k < m.steady  # it asked for this replica on the last tick too
            own = None  # its own held replica, looked past (pushed back if it takes nothing)
            while held and (held[0][2] in gaining or (held[0][2] == i and own is None)):
                entry = heapq.heappop(held)
                if entry[2] == i and i not in gaining:
                    own = entry
            movable = False
            if held:
                _, value, v_i = held[0]
                # a floor takes headroom whatever it is worth; an increment, only headroom worth less than
                # 1 / HOLD_FACTOR of it (both in units of their models' late budgets: a move costs the same
                # cold start whichever tier the want is in)
                movable = want_tier == FLOOR or -want_neg > HOLD_FACTOR * value
            if movable and not steady:
                damped.add(r.model)
                movable = False
            if not movable:
                if own is not None:
                    heapq.heappush(held, own)
                break
            v = models[v_i]
            v.granted -= 1
            left += v.r.gpus_per_replica
            taken.setdefault(v.r.model, set()).add(r.model)
            gaining.add(i)
            if v.granted > v.floor:  # its next held replica replaces it in the heap (one sift, not two)
                tier, neg = v.key(v.granted - 1)
                heapq.heapreplace(held, (-tier, -neg, v_i))
            else:
                heapq.heappop(held)
            # the loop's top grants the want once the moved GPUs cover it
    return left, taken, damped


def _grants(
    models: Sequence[_Model],
    budget_gpus: float,
    winners: list[tuple[tuple[int, float], str]],
    taken: dict[str, set[str]],
    damped: set[str],
) -> dict[str, FleetGrant]:
    last: list[tuple[tuple[int, float], str]] = []  # the last few models served: what a clipped one lost to
    for key, model in reversed(winners):
        if all(m != model for _, m in last):
            last.append((key, model))
        if len(last) > 3:
            break
    floors_exceed = sum(m.floor * m.r.gpus_per_replica for m in models) > budget_gpus + EPS
    out: dict[str, FleetGrant] = {}
    for m in models:
        r, n = m.r, m.granted
        lost_share: float | None = None
        lost_to: tuple[str, ...] = ()
        if n < r.desired and n >= m.floor:
            lost_share = m.lost_share()
            bar = m.key(n)
            lost_to = tuple(w for k, w in last if k < bar and w != r.model)[:3]
            lost_to = lost_to or tuple(sorted(taken.get(r.model, ())))[:3]
        out[r.model] = FleetGrant(
            r.model,
            r.desired,
            n,
            n * r.gpus_per_replica,
            m.floor,
            r.late_budget,
            r.late_share(n),
            lost_share,
            lost_to,
            r.model in damped,
            floors_exceed,
        )
    return out


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
    for weight, sampled, span_s in _sampled(scenarios, step_s):
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


def expected_requests(scenarios: Sequence[tuple[float, Sequence[float]]], *, step_s: float) -> float:
    """Requests expected over the value window, sampled as `marginal_values` samples it (so that with no
    replica every one of them is late, and the values add up to what the replicas keep from being late)."""
    return sum(
        weight * span_s * sum(max(0.0, rate) for rate in sampled)
        for weight, sampled, span_s in _sampled(scenarios, step_s)
    )


def _sampled(
    scenarios: Sequence[tuple[float, Sequence[float]]], step_s: float
) -> Iterator[tuple[float, Sequence[float], float]]:
    """Each scenario's weight, its at most MAX_VALUE_STEPS sampled rates, and the span each stands for."""
    for weight, path in scenarios:
        if not path or weight <= 0:
            continue
        stride = max(1, math.ceil(len(path) / MAX_VALUE_STEPS))
        sampled = path[::stride]
        yield weight, sampled, step_s * len(path) / len(sampled)


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
    now (held through the reactive stabilisation window by `allocate`); without a fresh observation, or
    when its own plan held (invalid or missing data), the floor is its whole ask, so the budget never takes
    replicas from a model it cannot see (missing data never scales down). Every replica is valued over the
    window a replica granted now would serve in, from T_load to the look-ahead plus the re-warm
    break-even, against the requests expected over that window and the model's SLO target."""
    desired = decision.desired_replicas
    current = snapshot.current_replicas or 0
    floor, _ = reactive_floor(snapshot, spec, now)
    held = not decision.valid or floor is None or snapshot.forecast is None or not snapshot.forecast_healthy
    floor = desired if held or floor is None else min(max(floor, spec.min_replicas), desired)
    values: tuple[float, ...] = ()
    floor_values: tuple[float, ...] = ()
    expected = 0.0
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
        expected = expected_requests(scenarios, step_s=fc.step_s)
    rps = snapshot.observed_rps
    if not floor_values and floor > 0 and rps is not None and math.isfinite(rps) and rps > 0:
        observed = [(1.0, [rps] * MAX_VALUE_STEPS)]  # no forecast: the floor at the observed rate
        step_s = (spec.lookahead_s + spec.break_even_s - spec.t_load_s) / MAX_VALUE_STEPS
        floor_values = marginal_values(
            observed,
            step_s=step_s,
            capacity_rps=spec.capacity_rps_per_replica,
            slo_wait_s=spec.slo_wait_s,
            start=0,
            count=floor,
        )
        expected = expected_requests(observed, step_s=step_s)
    return FleetRequest(
        model,
        desired,
        floor,
        current,
        gpus_per_replica,
        priority,
        values,
        floor_values,
        expected,
        spec.slo_target,
        spec.scale_down_stabilization_s,
    )
