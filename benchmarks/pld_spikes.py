"""Where PLD's training-loss spikes come from: the steps that skipped the first block.

PLD's coins are a pure function of (seed, global step, forward index), so a finished run's
`metrics.csv` (its per-step θ and loss) is enough to redraw which blocks each step kept. For
every run given, this prints how often block 0 was skipped and the training loss's excess over
its neighbours' median (±5 steps) at those steps and at the others, with the gradient norms.

    python benchmarks/pld_spikes.py runs/demo/runs/leantrain/000400 [more run folders]

(one training forward per step, i.e. `optim.grad_accum: 1`; the PLD seed is the default 1234
unless `--seed` says otherwise).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from leantrain.pld.schedule import coin_seed, draw_layer_coins, layer_keep_probs
from leantrain.trainer.report import read_metrics


def block0_table(run: Path, seed: int) -> str:
    """One Markdown row: skips of block 0, excess loss and gradient norm there and elsewhere."""
    rows = read_metrics(run)
    layers = int(json.loads((run / "model" / "config.json").read_text())["n_layer"])
    skipped, kept = [], []
    for i, row in enumerate(rows):
        g = torch.Generator().manual_seed(coin_seed(seed, int(row["step"]) - 1, 0))
        keep = draw_layer_coins(layer_keep_probs(layers, row["pld/theta"]), g)
        near = [r["loss"] for r in rows[max(0, i - 5) : i + 6] if r is not row]
        excess = (row["loss"] - statistics.median(near), row["grad_norm"])
        (kept if keep[0] else skipped).append(excess)

    def stats(xs: list[tuple[float, float]]) -> str:
        if not xs:
            return "- | -"
        return (
            f"{statistics.mean(e for e, _ in xs):+.3f} (max {max(e for e, _ in xs):+.3f}) | "
            f"{statistics.mean(g for _, g in xs):.2f}"
        )

    return (
        f"| {run} | {layers} | {len(skipped)} of {len(rows)} | {stats(skipped)} | {stats(kept)} |"
    )


def main() -> int:
    """Print the table for every run folder given."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished PLD run folders")
    parser.add_argument("--seed", type=int, default=1234, help="progressive_layer_drop.seed")
    args = parser.parse_args()
    print(
        "| run | blocks | steps skipping block 0 | excess loss there | grad norm there "
        "| excess loss elsewhere | grad norm elsewhere |\n| --- | --- | --- | --- | --- | --- | --- |"
    )
    for run in args.runs:
        print(block0_table(run, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
