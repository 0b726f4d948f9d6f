"""Equal-quality comparison: Pareto frontiers, speed-ups at equal loss, `leantrain compare`.

`frontier` is the pure core (points, frontiers, log-cost interpolation, speed-ups with
intervals); `flops` counts training FLOPs from the model shape and each step's lengths; `arms`
turns a recipe into each arm's recipe at a budget; `runner` trains the runs; `summary` says what
they show; `cli` is the command.
"""

from leantrain.compare.flops import ModelShape, block_flops, run_flops, step_flops
from leantrain.compare.frontier import (
    CostAt,
    Point,
    SpeedUp,
    Status,
    cost_at_loss,
    loss_at_cost,
    pareto_frontier,
    speedup,
)

__all__ = [
    "CostAt",
    "ModelShape",
    "Point",
    "SpeedUp",
    "Status",
    "block_flops",
    "cost_at_loss",
    "loss_at_cost",
    "pareto_frontier",
    "run_flops",
    "speedup",
    "step_flops",
]
