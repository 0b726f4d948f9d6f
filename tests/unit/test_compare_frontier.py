"""The equal-quality core: Pareto frontiers, log-cost interpolation and speed-ups."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leantrain.compare import (
    Point,
    Status,
    cost_at_loss,
    loss_at_cost,
    pareto_frontier,
    speedup,
)


def curve(costs: list[float], a: float = 3.0, b: float = 0.5) -> list[Point]:
    """A monotone synthetic curve: loss = a − b·ln(cost)."""
    return [Point(c, a - b * math.log(c), 0.01, f"c{c}") for c in costs]


def test_monotone_curve_is_its_own_frontier_and_interpolates_exactly_in_log_cost() -> None:
    pts = curve([100, 200, 400])
    front = pareto_frontier(reversed(pts))
    assert front == pts
    # loss = 3 − 0.5 ln c is linear in log-cost, so interpolation recovers any cost
    for c in (100, 150, 283.0, 400):
        at = cost_at_loss(front, 3 - 0.5 * math.log(c))
        assert at.status is Status.INTERPOLATED and at.cost == pytest.approx(c)
        assert loss_at_cost(front, c) == pytest.approx(3 - 0.5 * math.log(c))


def test_noisy_points_off_the_frontier_are_dropped() -> None:
    pts = [Point(100, 2.0), Point(200, 2.1), Point(300, 1.8), Point(400, 1.85), Point(500, 1.7)]
    assert [p.cost for p in pareto_frontier(pts)] == [100, 300, 500]


def test_ties_keep_the_cheapest_and_the_lowest() -> None:
    pts = [Point(100, 2.0), Point(100, 1.9), Point(200, 1.9), Point(300, 1.5)]
    assert [(p.cost, p.loss) for p in pareto_frontier(pts)] == [(100, 1.9), (300, 1.5)]


def test_a_loss_never_reached_is_said_with_a_lower_bound() -> None:
    base = curve([100, 200, 400])
    s = speedup(base, Point(100, base[-1].loss - 0.2, 0.01))
    assert s.status is Status.NOT_REACHED and s.bound == "lower"
    assert s.value == pytest.approx(4.0)  # the baseline needs more than 400 = 4x the cost
    assert s.describe().startswith("not reached (> 4.00x")


def test_a_loss_above_the_cheapest_point_is_extrapolated_and_said() -> None:
    base = curve([100, 200, 400])
    s = speedup(base, Point(10, 3 - 0.5 * math.log(50), 0.0))
    assert s.status is Status.EXTRAPOLATED and s.value == pytest.approx(5.0)
    assert "(extrapolated)" in s.describe()


def test_one_point_frontier() -> None:
    base = [Point(100, 2.0, 0.01)]
    assert cost_at_loss(base, 2.0).status is Status.INTERPOLATED
    above = speedup(base, Point(50, 2.1))
    assert above.bound == "upper" and above.value == pytest.approx(2.0) and not above.ahead
    assert above.describe() == "< 2.00x (extrapolated)"
    below = speedup(base, Point(50, 1.9))
    assert below.status is Status.NOT_REACHED and below.ahead
    assert loss_at_cost(base, 100) == 2.0 and loss_at_cost(base, 99) is None


def test_interval_widens_with_the_standard_errors() -> None:
    base = [Point(c, 3 - 0.5 * math.log(c), 0.02) for c in (100, 200, 400, 800)]
    tight = speedup(base, Point(150, 3 - 0.5 * math.log(300), 0.0), z=0.0)
    wide = speedup(base, Point(150, 3 - 0.5 * math.log(300), 0.03), z=1.0)
    assert tight.low == pytest.approx(tight.value) == pytest.approx(2.0)
    assert wide.low < wide.value < wide.high
    # σ = hypot(0.03, 0.02); the slope is 0.5 per e-fold of cost
    sigma = math.hypot(0.03, 0.02)
    assert wide.high / wide.value == pytest.approx(math.exp(sigma / 0.5))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="cost"):
        Point(0, 1.0)
    with pytest.raises(ValueError, match="se"):
        Point(1, 1.0, -0.1)
    with pytest.raises(ValueError, match="no points"):
        cost_at_loss([], 1.0)
    with pytest.raises(ValueError, match="pareto_frontier"):
        cost_at_loss([Point(1, 1.0), Point(2, 1.5)], 1.2)


finite = st.floats(min_value=0.5, max_value=5.0, allow_nan=False)
costs = st.floats(min_value=1.0, max_value=1e12, allow_nan=False)
points = st.lists(st.builds(Point, costs, finite), min_size=1, max_size=12)


@given(points)
def test_frontier_properties(pts: list[Point]) -> None:
    front = pareto_frontier(pts)
    assert front and all(p in pts for p in front)
    for a, b in pairwise(front):
        assert a.cost < b.cost and a.loss > b.loss
    for p in pts:  # nothing beats a frontier point: each point is dominated by one on it
        assert any(f.cost <= p.cost and f.loss <= p.loss for f in front)
    assert front[0].cost == min(p.cost for p in pts)
    assert front[-1].loss == min(p.loss for p in pts)


@given(points, finite)
def test_cost_at_loss_is_monotone_and_inside_the_range_when_interpolated(
    pts: list[Point], loss: float
) -> None:
    front = pareto_frontier(pts)
    at = cost_at_loss(front, loss)
    if at.status is Status.INTERPOLATED:
        assert front[0].cost * (1 - 1e-9) <= at.cost <= front[-1].cost * (1 + 1e-9)
        back = loss_at_cost(front, min(max(at.cost, front[0].cost), front[-1].cost))
        assert back == pytest.approx(loss, abs=1e-6)
    elif at.status is Status.NOT_REACHED:
        assert loss < front[-1].loss and at.cost == front[-1].cost
    else:
        assert loss > front[0].loss
    worse = cost_at_loss(front, loss + 0.1)
    assert worse.cost <= at.cost * (1 + 1e-9)  # a worse loss never needs more baseline cost


@given(points, st.builds(Point, costs, finite, st.floats(0, 0.2)))
def test_speedup_interval_brackets_the_value(pts: list[Point], p: Point) -> None:
    s = speedup(pareto_frontier(pts), p, z=1.0)
    assert s.low <= s.value * (1 + 1e-9) and s.value <= s.high * (1 + 1e-9)
