"""Tables and numbers of `time_to_quality.py`: what each run spent, reached and took to a target.

Pure functions of a run's `metrics.csv` rows (`leantrain.trainer.report.read_metrics`) and of
recipes; the GLUE table sits next to the published PLD numbers quoted in SPEC.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import _harness as harness

from leantrain.trainer.recipe import Recipe
from leantrain.trainer.report import time_to_loss

__all__ = [
    "GLUE_HEADER",
    "PUBLISHED_GLUE",
    "best_eval",
    "comparison",
    "finite",
    "glue_cells",
    "glue_sizes",
    "last_eval",
    "recipe_sizes",
    "run_row",
]


#: Zhang & He 2020 (NeurIPS), Table "GLUE dev results", as quoted in SPEC.md §1 "Published GLUE
#: results (fine-tuned from the PLD checkpoint)": BERT-base on Wikipedia + BookCorpus.
PUBLISHED_GLUE = {
    "BERT-base original (published)": ("66.4", "88.9/84.8", "87.1/89.2", "52.1", "93.5"),
    "BERT-base, their impl. (published)": ("67.8", "88.0/86.0", "89.5/89.2", "52.5", "91.2"),
    "PLD (published)": ("69.3", "86.6/84.3", "90.0/89.6", "55.8", "91.6"),
}


GLUE_HEADER = ["model", "RTE acc", "MRPC F1/acc", "STS-B P/S", "CoLA MCC", "SST-2 acc"]


def _num(value: float | str, digits: int = 4) -> str:
    """A table cell: text as is, NaN as "not reached", millions as "1.23M", else 4 digits."""
    if isinstance(value, str):
        return value
    if not math.isfinite(value):
        return "not reached"
    if abs(value) >= 1e5:
        return f"{value / 1e6:.2f}M"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.{digits}g}"


def _ratio(base: float | str, other: float | str) -> str:
    """base / other as "1.23x", or "-" when either is missing or not positive."""
    if isinstance(base, str) or isinstance(other, str) or not math.isfinite(other) or other <= 0:
        return "-"
    return f"{base / other:.2f}x"


def last_eval(rows: Sequence[dict[str, float]], key: str = "eval/loss") -> float:
    """The last logged value of `key` (the final validation loss by default)."""
    return [r[key] for r in rows if key in r][-1]


def best_eval(rows: Sequence[dict[str, float]]) -> tuple[float, float]:
    """(lowest validation loss, its step)."""
    return min((r["eval/loss"], r["step"]) for r in rows if "eval/loss" in r)


def run_row(
    name: str, rows: Sequence[dict[str, float]], target: float, baseline_best: float
) -> dict[str, float | str]:
    """What a run spent and reached, and what it took to reach `target` (and the baseline's best
    validation loss)."""
    last = rows[-1]
    best, best_step = best_eval(rows)
    return {
        "run": name,
        "steps": last["step"],
        "wall_s": last["wall_s"],
        "ms_per_step": 1000 * last["wall_s"] / last["step"],
        "tokens": last["tokens"],
        "layer_tokens": last["layer_tokens"],
        "final_eval_loss": last_eval(rows),
        "best_eval_loss": best,
        "best_step": best_step,
        **{k: v for k, v in last.items() if k.startswith("eval/") and k != "eval/loss"},
        **{
            f"{x}_to_target": time_to_loss(rows, target, x)
            for x in ("step", "wall_s", "tokens", "layer_tokens")
        },
        "wall_s_to_best": time_to_loss(rows, baseline_best, "wall_s"),
    }


def comparison(rows: list[dict[str, float | str]], target: float, extra: Sequence[str]) -> str:
    """Table of the runs: what each spent, reached, and needed to reach `target`."""
    header = ["run", "steps", "train s", "ms/step", "final eval loss", "best (step)", *extra]
    header += ["steps to target", "s to target", "tokens to target", "layer-tokens to target"]
    cells = []
    for r in rows:
        cells.append(
            [
                str(r["run"]),
                _num(r["steps"]),
                _num(r["wall_s"]),
                _num(r["ms_per_step"]),
                _num(r["final_eval_loss"]),
                f"{_num(r['best_eval_loss'])} ({_num(r['best_step'])})",
                *(_num(r[k]) for k in extra),
                *(_num(r[f"{x}_to_target"]) for x in ("step", "wall_s", "tokens", "layer_tokens")),
            ]
        )
    base, tech = rows[0], rows[-1]
    lines = [
        f"Target: the baseline's final validation loss, {target:.4f}. Training seconds exclude "
        "evaluation; tokens are effective tokens as Megatron-DeepSpeed counts them (curriculum "
        "length; random-LTD's reserved length averaged over the layers); layer-tokens are what "
        "the blocks processed (PLD: kept blocks only).",
        "",
        harness.markdown_table(header, cells),
        "",
    ]
    if isinstance(tech["wall_s_to_target"], float) and math.isfinite(tech["wall_s_to_target"]):
        lines.append(
            f"**{tech['run']} vs {base['run']} to the target: wall-clock "
            f"{_ratio(base['wall_s_to_target'], tech['wall_s_to_target'])} faster, tokens "
            f"{_ratio(base['tokens_to_target'], tech['tokens_to_target'])} fewer, layer-tokens "
            f"{_ratio(base['layer_tokens_to_target'], tech['layer_tokens_to_target'])} fewer** "
            "(baseline / technique)."
        )
    else:
        lines.append(
            f"**{tech['run']} did not reach the target within {_num(tech['steps'])} steps** "
            f"(final {_num(tech['final_eval_loss'])} against {target:.4f})."
        )
    best = float(base["best_eval_loss"])
    if best < target - 1e-3:
        lines.append(
            f"\nNote: the baseline's validation loss bottomed at {best:.4f} (step "
            f"{_num(base['best_step'])}) before its final {target:.4f}: it overfits this small "
            "corpus, and its final loss is an easier target than its best. To its best loss: "
            + ", ".join(f"{r['run']} {_num(r['wall_s_to_best'])} s" for r in rows)
            + "."
        )
    return "\n".join(lines)


def finite(obj: Any) -> Any:
    """`obj` with NaN and infinities as None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def recipe_sizes(recipe: Recipe) -> str:
    """One line of a recipe's model, data and optimizer sizes, for the summary."""
    cfg = ", ".join(f"{k}={v}" for k, v in recipe.model.config.items())
    o = recipe.optim
    return (
        f"{recipe.model.family or recipe.model.pretrained} ({cfg}); data.seq_len "
        f"{recipe.data.seq_len}; batch {o.micro_batch_size}x{o.grad_accum}; lr {o.lr}; "
        f"warmup {o.warmup_steps}; decay {o.decay}; max_steps {o.max_steps}; eval every "
        f"{recipe.eval.interval}"
    )


def glue_sizes(recipe: Recipe) -> str:
    """One line of how the GLUE fine-tunes ran (steps, batch, LR source, subsets)."""
    o = recipe.optim
    return (
        f"{o.max_steps} steps of {o.micro_batch_size} (warmup {o.warmup_steps}, {o.decay} "
        f"decay), data.seq_len {recipe.data.seq_len}, the paper's LR per task (the glue_*.yaml "
        f"recipes), training rows <= {recipe.data.subset or 'all'}, full dev sets unless "
        f"data.valid_subset ({recipe.data.valid_subset or 'unset'})"
    )


def glue_cells(glue: dict[str, dict[str, dict[str, float]]]) -> list[list[str]]:
    """Rows of the GLUE table: ours per pre-trained variant (percent), then the published ones."""

    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    cells = []
    for variant, m in glue.items():
        cells.append(
            [
                f"ours: {variant}",
                pct(m["rte"]["accuracy"]),
                f"{pct(m['mrpc']['f1'])}/{pct(m['mrpc']['accuracy'])}",
                f"{pct(m['stsb']['pearson'])}/{pct(m['stsb']['spearman'])}",
                pct(m["cola"]["matthews_corr"]),
                pct(m["sst2"]["accuracy"]),
            ]
        )
    return cells + [[name, *values] for name, values in PUBLISHED_GLUE.items()]
