"""Equal-quality comparison: Pareto frontiers of (cost, loss ± SE) and speed-ups read off them.

The question a reader of an efficiency claim asks is "how much less did it cost to reach the same
quality?". Each run is one point (its cost, its final validation loss and that loss's standard
error). A method's *frontier* is the cheapest way it reached each quality: its points sorted by
cost, keeping only those whose loss is below every cheaper point's. The baseline's cost at a
technique's loss is read off the baseline frontier, interpolated linearly in log-cost between the
two points that bracket the loss; the *speed-up* is that cost divided by the technique's cost.

Nothing is silent: a loss the baseline never reached gives "not reached" with a lower bound
(the baseline would need more than its largest cost), a loss above the baseline's cheapest point
is "extrapolated" along the first frontier segment in log-cost (or, with one point, an upper
bound). The interval comes from the loss standard errors: the speed-ups at loss ± z·σ, with σ the
technique's SE and the baseline's (interpolated) SE combined in quadrature. It treats the two SEs
as independent, which overstates the uncertainty of a difference measured on the same
validation sequences, and it does not include seed-to-seed variance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise

__all__ = [
    "CostAt",
    "Point",
    "SpeedUp",
    "Status",
    "cost_at_loss",
    "loss_at_cost",
    "pareto_frontier",
    "speedup",
]


class Status(StrEnum):
    """How a baseline cost was read off its frontier."""

    #: between two frontier points (or exactly at one)
    INTERPOLATED = "interpolated"
    #: the loss is above the cheapest frontier point's: cost extrapolated (or bounded) below it
    EXTRAPOLATED = "extrapolated"
    #: the loss is below every frontier point's: the baseline never reached it
    NOT_REACHED = "not reached"


@dataclass(frozen=True)
class Point:
    """One run: what it cost and the validation loss it reached (with its standard error)."""

    cost: float
    loss: float
    se: float = 0.0
    label: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cost) and self.cost > 0):
            raise ValueError(f"Point {self.label!r}: cost {self.cost}; expected a finite value > 0")
        if not math.isfinite(self.loss):
            raise ValueError(f"Point {self.label!r}: loss {self.loss}; expected a finite value")
        if not (math.isfinite(self.se) and self.se >= 0):
            raise ValueError(f"Point {self.label!r}: se {self.se}; expected a finite value >= 0")


@dataclass(frozen=True)
class CostAt:
    """The baseline's cost at a loss, and how it was obtained.

    `bound` is "exact" for an interpolated or extrapolated value, "lower" when the true cost is
    above `cost` (not reached: `cost` is the frontier's largest), "upper" when it is below
    `cost` (a loss above a one-point frontier: `cost` is that point's).
    """

    cost: float
    status: Status
    bound: str = "exact"
    #: the baseline frontier's standard error at this loss (interpolated between its points)
    se: float = 0.0


def pareto_frontier(points: Iterable[Point]) -> list[Point]:
    """The points no other point beats: sorted by cost, each strictly lower in loss than every
    cheaper one. Of points with equal cost the lowest loss stays; of equal losses the cheapest."""
    ordered = sorted(points, key=lambda p: (p.cost, p.loss))
    front: list[Point] = []
    for p in ordered:
        if not front or p.loss < front[-1].loss:  # equal costs: the lowest loss came first
            front.append(p)
    return front


def _check(frontier: Sequence[Point]) -> None:
    if not frontier:
        raise ValueError("frontier: no points; expected at least one run")
    for a, b in pairwise(frontier):
        if not (a.cost < b.cost and a.loss > b.loss):
            raise ValueError(
                "frontier: points must rise in cost and fall in loss; build it with "
                f"pareto_frontier() (got {a} then {b})"
            )


def cost_at_loss(frontier: Sequence[Point], loss: float) -> CostAt:
    """The frontier's cost at `loss`, linear in log-cost between the bracketing points."""
    _check(frontier)
    first, last = frontier[0], frontier[-1]
    if len(frontier) == 1 and loss == first.loss:
        return CostAt(first.cost, Status.INTERPOLATED, "exact", first.se)
    if loss < last.loss:
        return CostAt(last.cost, Status.NOT_REACHED, "lower", last.se)
    if loss > first.loss:
        if len(frontier) == 1:
            return CostAt(first.cost, Status.EXTRAPOLATED, "upper", first.se)
        return CostAt(_log_interp(first, frontier[1], loss), Status.EXTRAPOLATED, "exact", first.se)
    for a, b in pairwise(frontier):
        if b.loss <= loss <= a.loss:
            w = (a.loss - loss) / (a.loss - b.loss)
            return CostAt(
                _log_interp(a, b, loss), Status.INTERPOLATED, "exact", a.se + w * (b.se - a.se)
            )
    raise AssertionError("unreachable: a monotone frontier brackets every loss in its range")


def _log_interp(a: Point, b: Point, loss: float) -> float:
    """Cost where the line through a and b (loss against log-cost) takes the value `loss`."""
    w = (a.loss - loss) / (a.loss - b.loss)
    return math.exp(math.log(a.cost) + w * (math.log(b.cost) - math.log(a.cost)))


def loss_at_cost(frontier: Sequence[Point], cost: float) -> float | None:
    """The frontier's loss at `cost` (linear in log-cost); None outside its cost range."""
    _check(frontier)
    if cost < frontier[0].cost or cost > frontier[-1].cost:
        return None
    if len(frontier) == 1:
        return frontier[0].loss
    for a, b in pairwise(frontier):
        if a.cost <= cost <= b.cost:
            w = (math.log(cost) - math.log(a.cost)) / (math.log(b.cost) - math.log(a.cost))
            return a.loss + w * (b.loss - a.loss)
    return None  # unreachable: the range check above covers every cost


@dataclass(frozen=True)
class SpeedUp:
    """Baseline cost at the technique's loss / the technique's cost, with its interval."""

    value: float
    status: Status
    #: "exact", "lower" (the speed-up is above `value`) or "upper" (below it)
    bound: str
    #: the speed-ups at the technique's loss + z·σ and − z·σ (each possibly a bound itself)
    low: float
    high: float
    low_status: Status
    high_status: Status

    @property
    def ahead(self) -> bool:
        """Whether the technique's point lies below the baseline frontier (speed-up > 1)."""
        return self.value > 1.0 if self.bound != "upper" else False

    def describe(self) -> str:
        """E.g. `1.62x [1.41, 1.88]`, `not reached (> 2.10x)`, `1.30x [1.1, 1.5] (extrapolated)`."""
        if self.status is Status.NOT_REACHED:
            return f"not reached (> {self.value:.2f}x)"
        if self.bound == "upper":
            return f"< {self.value:.2f}x (extrapolated)"

        def end(x: float, s: Status) -> str:
            mark = {Status.NOT_REACHED: ">", Status.EXTRAPOLATED: "~"}.get(s, "")
            return f"{mark}{x:.2f}"

        text = (
            f"{self.value:.2f}x [{end(self.low, self.low_status)}, "
            f"{end(self.high, self.high_status)}]"
        )
        return text + (" (extrapolated)" if self.status is Status.EXTRAPOLATED else "")


def speedup(baseline: Sequence[Point], point: Point, *, z: float = 1.0) -> SpeedUp:
    """Equal-quality speed-up of `point` against the `baseline` frontier.

    The interval is [speed-up at loss + z·σ, speed-up at loss − z·σ] with
    σ = sqrt(point.se² + baseline SE at that loss²): a worse loss needs less baseline cost.
    """
    if z < 0:
        raise ValueError(f"speedup: z {z}; expected >= 0")
    mid = cost_at_loss(baseline, point.loss)
    sigma = math.hypot(point.se, mid.se)
    lo = cost_at_loss(baseline, point.loss + z * sigma)
    hi = cost_at_loss(baseline, point.loss - z * sigma)
    return SpeedUp(
        value=mid.cost / point.cost,
        status=mid.status,
        bound=mid.bound,
        low=lo.cost / point.cost,
        high=hi.cost / point.cost,
        low_status=lo.status,
        high_status=hi.status,
    )
