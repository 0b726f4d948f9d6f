"""Train every (arm, budget) run of a comparison and read back what it cost and reached.

Each run is the reference trainer (`leantrain.trainer.train`) on the arm's recipe scaled to its
budget (`arms.scale_to_budget`), evaluated once, at its end, on the whole validation split
(`eval.final_whole`), logging every step so its FLOPs can be counted from the schedules it used.
Runs go to `<output_dir>/runs/<arm>/<steps>/`; a run whose `result.json` holds the same resolved
recipe is reused, not retrained, so an interrupted comparison continues where it stopped (the
recipe is the whole identity: after upgrading leantrain or torch, use a fresh output folder).
Arms alternate within each budget, so a machine whose load drifts bills every arm alike.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from leantrain.compare.arms import arm_recipe, scale_to_budget
from leantrain.compare.flops import ModelShape, run_flops
from leantrain.errors import LeantrainError
from leantrain.files import atomic_write_json

__all__ = ["COSTS", "RunResult", "run_all", "run_one"]

#: Cost axes: result field -> how it is named in tables.
COSTS = {"seconds": "training seconds", "layer_tokens": "layer-tokens", "flops": "FLOPs"}
_RESULT = "result.json"


@dataclass(frozen=True)
class RunResult:
    """What one run spent and reached."""

    arm: str
    steps: int
    #: training wall-clock (evaluation excluded)
    seconds: float
    tokens: float
    layer_tokens: float
    flops: float
    #: final validation loss on the whole split, and its standard error over sequences
    loss: float
    se: float
    run_dir: str

    def cost(self, kind: str) -> float:
        """The run's cost on axis `kind` (a key of COSTS)."""
        return float(getattr(self, kind))


def _canonical(recipe: Any) -> str:
    """The recipe as a run's identity; where it is written is not part of it."""
    if isinstance(recipe, dict):
        recipe = {k: v for k, v in recipe.items() if k != "output_dir"}
    return json.dumps(recipe, sort_keys=True, default=str)


def run_one(
    raw: Mapping[str, Any],
    *,
    arm: str,
    steps: int,
    reference_steps: int,
    run_dir: Path,
    fixed: Sequence[str] = (),
    source: str,
) -> tuple[RunResult, bool]:
    """Train (or reuse) one run of `arm` for `steps` steps; returns its result and whether it
    was reused. `fixed` holds `key=value` overrides applied last (device, precision)."""
    from leantrain.trainer.recipe import apply_overrides, recipe_from_dict

    recipe_dict = scale_to_budget(arm_recipe(raw, arm), steps, reference=reference_steps)
    sets = [
        f"output_dir={run_dir}",
        f"eval.interval={steps}",
        "eval.final_whole=true",
        "eval.stop_at_loss=null",
        "log_interval=1",
        "checkpoint_interval=null",
    ]
    recipe_dict = apply_overrides(recipe_dict, [*sets, *fixed])
    done = run_dir / _RESULT
    if done.is_file():
        saved = json.loads(done.read_text())
        if _canonical(saved.get("recipe")) == _canonical(recipe_dict):
            return RunResult(**saved["result"]), True
    recipe = recipe_from_dict(recipe_dict, source=f"{source} [{arm}, {steps} steps]")
    from leantrain.trainer.loop import train

    seen: dict[str, Any] = {}

    def on_step(event: Any) -> None:
        if not seen:  # the shape of the model as trained
            seen["shape"] = ModelShape.from_model(getattr(event.model, "module", event.model))

    # not reused: a stale or unfinished run of another recipe in run_dir is replaced; each run
    # is summed up in one line by the caller, so the trainer's own start-up and eval lines wait
    with _only_warnings("leantrain"):
        final = train(recipe, overwrite=True, progress=False, on_step=on_step)
    from leantrain.trainer.report import read_metrics

    rows = read_metrics(run_dir)
    if "eval/loss" not in final:
        raise LeantrainError(f"{run_dir}: the run ended without a validation loss")
    o = recipe.optim
    world = int(os.environ.get("WORLD_SIZE", "1"))
    result = RunResult(
        arm=arm,
        steps=steps,
        seconds=float(final["wall_s"]),
        tokens=float(final["tokens"]),
        layer_tokens=float(final["layer_tokens"]),
        flops=run_flops(
            rows,
            seen["shape"],
            samples=o.micro_batch_size * o.grad_accum * world,
            seq_len=recipe.data.seq_len,
            config=recipe.config,
            micro_batches=o.grad_accum * world,
        ),
        loss=float(final["eval/loss"]),
        se=float(final.get("eval/loss_se", math.nan)),
        run_dir=str(run_dir),
    )
    atomic_write_json(done, {"recipe": recipe_dict, "result": asdict(result)})
    return result, False


def run_all(
    raw: Mapping[str, Any],
    *,
    arms: Sequence[str],
    budgets: Mapping[str, Sequence[int]],
    output_dir: Path,
    fixed: Sequence[str] = (),
    source: str,
    log: Callable[[str], None] = print,
) -> list[RunResult]:
    """Every arm at each of its budgets, alternating arms within each budget rank."""
    reference = int((raw.get("optim") or {}).get("max_steps", 100))
    results = []
    depth = max(len(budgets[a]) for a in arms)
    for i in range(depth):
        for arm in arms:
            if i >= len(budgets[arm]):
                continue
            steps = budgets[arm][i]
            run_dir = output_dir / "runs" / arm / f"{steps:06d}"
            result, reused = run_one(
                raw,
                arm=arm,
                steps=steps,
                reference_steps=reference,
                run_dir=run_dir,
                fixed=fixed,
                source=source,
            )
            results.append(result)
            how = "reused" if reused else f"{result.seconds:.1f} s training"
            se = f" ± {result.se:.4f}" if math.isfinite(result.se) else ""
            log(
                f"  {arm:>12} {steps:>6} steps: eval loss {result.loss:.4f}{se}, "
                f"{result.layer_tokens / 1e6:.2f}M layer-tokens, {result.flops / 1e12:.3f} TFLOP, "
                f"{how}"
            )
    return results


@contextlib.contextmanager
def _only_warnings(name: str) -> Iterator[None]:
    """Log only warnings and errors from logger `name` while the block runs."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)
