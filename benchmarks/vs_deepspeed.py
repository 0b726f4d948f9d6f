"""leantrain's PLD and random-LTD side by side with DeepSpeed 0.19.7's, in one process run.

Per shape, one process times forward + backward + optimizer steps on fresh random tokens:

- leantrain, a plain PyTorch loop (`torch.autocast` to `--dtype`, fused AdamW): the plain
  baseline (first and last), PLD at steady state θ(t) = θ̄ (`convert_to_progressive_layer_drop`),
  random-LTD at half length in all but the first and last block (as `tokendrop.py`), and every
  block skipped (T_fixed, for the time limit).
- DeepSpeed, its engine (`deepspeed.initialize`, `engine(...)`, `engine.backward`,
  `engine.step`) on the same HF model, seed and batch: engine baseline (first and last), PLD,
  random-LTD, every block skipped. Precision comes from the engine's own `torch_autocast`
  section (bf16 autocast over fp32 weights, like our loop; `--ds-precision engine` takes its
  `bf16` section instead: bf16 weights, fp32 master copy). The optimizer is the client's torch AdamW
  (fused on CUDA); `gradient_clipping` is set to 0 (DeepSpeed's default is 1.0; our loop does
  not clip).
  - PLD: the `progressive_layer_drop` section (θ̄, γ = 100, so θ(t) = θ̄ from the third step;
    at least 2 warm-up steps are run). The engine only passes `progressive_layer_drop=True,
    pld_theta=θ` to the model's forward, so the model side is DeepSpeedExamples' PreLN-layerdrop
    BERT recipe applied to the HF blocks: one numpy coin per block per forward, block i (0-based)
    kept with 1 − i(1 − θ)/L and its residual branches (attention and MLP outputs) multiplied
    `* 1 / p` with p = 1 − (i + 1)(1 − θ)/L; a skipped block is the identity. Its mean kept
    fraction is 1 − (1 − θ)(L − 1)/(2L) (0.771 at θ 0.5, L 12; ours 0.729), so its FLOP and time
    limits are its own.
  - random-LTD: `data_efficiency.data_routing.random_ltd` on layers 1..L−2 with min_value =
    max_value = S/2 (steady state), `convert_to_random_ltd(engine, <block class>)`, its CUDA
    ops (JIT-built with the machine's nvcc before timing; the build time is reported).

Reported per variant: median ms/step, the ratio to its own baseline (DeepSpeed's variants
against the DeepSpeed engine baseline, ours against the plain loop), ours/DeepSpeed ms, and peak
memory (`torch.cuda.max_memory_allocated` while the variant is built, warmed up and timed, less
what was allocated before; each variant builds its own model and frees it). Per technique: the
FLOP limit, the time limit (T_fixed + f·T_blocks)/T_base of each side, and the captured share
(docs: ../shared/docs/BENCHMARKS.md). The markdown tables come last; `--json` writes the rows.

DeepSpeed runs only on CUDA, with `import deepspeed` working at version 0.19.7 (the last release
with PLD; 0.19.8 rejects the section). Otherwise its cells say why; a DeepSpeed exception is
caught and reported with its message (traceback on stderr) and never stops our side.

Caveats, where DeepSpeed meets current Hugging Face models:
- HF 5 calls its blocks with positional arguments, and DeepSpeed's `RandomLayerTokenDrop`
  forwards keywords only, so each block sits in a small adapter that names the positional
  arguments by the block's signature: what a DeepSpeed user of HF 5 has to write.
- DeepSpeed's encoder path needs a dense [B, 1, S, S] mask (`bert_sample_tokens` asserts one
  and gathers it per sample in a Python loop); HF BERT with SDPA and no padding passes None, so
  the adapter of each dropping layer hands it an all-True bool mask, and those layers run SDPA
  with a mask (no flash kernel): a cost of DeepSpeed's design, timed as such.
- Its decoder path takes the top-left r×r corner of the mask; HF GPT-2 with SDPA and no padding
  passes None and SDPA's `is_causal` covers the kept tokens, so it is exact here.
- Its gather/scatter kernels dispatch on float32 or "half"; a bf16 tensor is copied bit for bit
  as half, exact for a copy (under autocast the residual stream is float32 anyway).
- PLD scaling differs by design: ours is one fused x + (block(x) − x)/p per kept block, the
  reference multiplies each branch output `* 1 / p` (two passes each; on HF's Post-LN BERT the
  branches are the two output projections, before their residual add and LayerNorm). HF BERT is
  Post-LN, where PLD is not meant to train well; both sides time the same model, so the timing
  comparison stands. DeepSpeed's coins come from numpy's global RNG, seeded 0 per variant.
- Both sides run eager (no `torch.compile`) and measure T_fixed with the same surgery (every HF
  block replaced by the identity). BENCHMARKS.md quotes DeepSpeed's random-LTD at 52.1 ms against
  its engine's 62.8 ms (0.831) on the GPT-2 shape on an H100: a check on this run's DS numbers.

    python benchmarks/vs_deepspeed.py                    # CPU: tiny shapes, our side only
    python benchmarks/vs_deepspeed.py --device cuda --dtype bf16 --json runs/vs_deepspeed.json
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import traceback
from collections.abc import Callable
from typing import Any

import _harness as harness
import layerdrop
import tokendrop
import torch
from _deepspeed_side import (
    DEEPSPEED_VERSION,
    Setup,
    Step,
    build_model,
    deepspeed_setup,
    deepspeed_skip_reason,
    ds_pld_keep_fraction,
    one_line,
)
from _harness import Shape

from leantrain.models import find_block_list
from leantrain.pld import ProgressiveLayerDrop, convert_to_progressive_layer_drop
from leantrain.pld.schedule import expected_keep_fraction
from leantrain.random_ltd import convert_to_random_ltd
from leantrain.surgery import add_mixin

__all__ = ["SHAPES", "main", "run_shape", "technique_table", "variant_table"]

SHAPES: dict[str, Shape] = {
    **{name: tokendrop.SHAPES[name] for name in ("gpt2-1024", "bert-128", "bert-512")},
    **{name: layerdrop.SHAPES[name] for name in ("gpt2-cpu", "bert-cpu")},
}


# ---- leantrain: the plain loop -------------------------------------------------------------


def _ours(shape: Shape, args: argparse.Namespace, technique: str) -> Setup:
    """A setup for our loop: "base", "pld", "ltd" or "skip"."""

    def setup(info: dict[str, Any]) -> Step:
        model = build_model(shape, args)
        hooks: list[Callable[[], object]] = []  # run before each step
        if technique == "pld":
            pld = ProgressiveLayerDrop(theta=args.theta, gamma=0.001)
            convert_to_progressive_layer_drop(model, pld)
            steps = itertools.count(10**6)  # θ(t) = θ̄ to float precision
            hooks.append(lambda: pld.update_state(next(steps)))
            info["close"] = lambda: info.update(theta=pld.get_theta())
        elif technique == "ltd":
            sched = harness.half_length_ltd_scheduler(shape)
            convert_to_random_ltd(model, sched)
            hooks.append(sched.step)
            info["close"] = lambda: info.update(reserved=sched.current_seq)
        elif technique == "skip":
            for block in find_block_list(model).blocks:
                add_mixin(block, harness.SkipBlockMixin)
        fused = torch.device(args.device).type == "cuda"
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
        train = harness.train_step(model, opt, shape, args, low=0, set_to_none=True)

        def step() -> None:
            for hook in hooks:
                hook()
            train()

        return step

    return setup


# ---- one shape, the rows, the tables --------------------------------------------------------


def _ds_cell(setup: Setup, args: argparse.Namespace, skip: str | None, warmup: int = 0) -> dict:
    """Measure a DeepSpeed variant, or say why not: {"status": ...} plus what was measured."""
    if skip:
        return {"status": skip}
    try:
        return {"status": "ok", **harness.measure(setup, args, warmup)}
    except Exception as exc:  # DeepSpeed's failure is a result, not a crash of our side
        traceback.print_exc(file=sys.stderr)
        harness.release_memory(torch.device(args.device))
        return {"status": f"error: {one_line(exc)}"}


def _med(cell: dict[str, Any]) -> float | None:
    return statistics.median(cell["ms"]) if "ms" in cell else None


def _baseline(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """The baseline from its first and last runs: all their times, the larger peak."""
    if "ms" not in first or "ms" not in last:
        return {"status": first["status"] if "ms" not in first else last["status"]}
    peaks = [first["peak_mib"], last["peak_mib"]]
    return {
        "status": "ok",
        "ms": [*first["ms"], *last["ms"]],
        "peak_mib": None if None in peaks else max(peaks),
        "first_ms": _med(first),
        "last_ms": _med(last),
    }


def _limits(shape: Shape, theta: float, reserved: int) -> dict[str, tuple[float, ...]]:
    """Per technique: kept fraction f and FLOP limit of ours, then of DeepSpeed's."""
    keeps = (expected_keep_fraction(shape.layers, theta), ds_pld_keep_fraction(shape.layers, theta))
    pld = [(keep, harness.pld_flop_limit(shape, keep)) for keep in keeps]
    ltd = harness.ltd_limits(shape, reserved)  # the same layers and length on both sides
    return {"pld": (*pld[0], *pld[1]), "ltd": (*ltd, *ltd)}


def _captured(measured: float | None, limit: float | None) -> float | None:
    if measured is None or limit is None or limit == 1:
        return None
    return harness.captured_share(measured, limit)


VARIANTS = {"base": "baseline", "skip": "all blocks skipped", "pld": "PLD", "ltd": "random-LTD"}


def run_shape(name: str, shape: Shape, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time every variant of one shape in one process; one row per variant."""
    skip = deepspeed_skip_reason(torch.device(args.device))
    ours = {"first": harness.measure(_ours(shape, args, "base"), args)}
    for technique in ("pld", "ltd", "skip"):
        ours[technique] = harness.measure(_ours(shape, args, technique), args)
    ds = {"first": _ds_cell(deepspeed_setup(shape, args, "base"), args, skip)}
    ds["pld"] = _ds_cell(
        deepspeed_setup(shape, args, "pld"), args, skip, warmup=2
    )  # θ(t) = θ̄ from step 2
    for technique in ("ltd", "skip"):
        ds[technique] = _ds_cell(deepspeed_setup(shape, args, technique), args, skip)
    ds["base"] = _baseline(
        ds.pop("first"), _ds_cell(deepspeed_setup(shape, args, "base"), args, skip)
    )
    last = harness.measure(_ours(shape, args, "base"), args)
    ours["base"] = _baseline({"status": "ok", **ours.pop("first")}, {"status": "ok", **last})

    t_base, ds_base = _med(ours["base"]) or math.nan, _med(ds["base"])
    t_fixed, ds_fixed = _med(ours["skip"]) or math.nan, _med(ds["skip"])
    limits = _limits(shape, args.theta, ours["ltd"]["reserved"])
    rows = []
    for variant, label in VARIANTS.items():
        o, d = ours[variant], ds[variant]
        o_ms, d_ms = _med(o) or math.nan, _med(d)
        row: dict[str, Any] = {
            **harness.shape_row(name, shape),
            "variant": label,
            "ours_ms": o_ms,
            "ours_ratio": o_ms / t_base,
            "ours_peak_mib": o["peak_mib"],
            "ds_status": d.get("status", "ok"),
            "ds_ms": d_ms,
            "ds_ratio": d_ms / ds_base if d_ms is not None and ds_base else None,
            "ds_peak_mib": d.get("peak_mib"),
            "ours_over_ds": o_ms / d_ms if d_ms else None,
        }
        if variant == "base":
            row.update(base_first_ms=o["first_ms"], base_last_ms=o["last_ms"])
            row.update(ds_base_first_ms=d.get("first_ms"), ds_base_last_ms=d.get("last_ms"))
        if variant in limits:
            keep, flop, ds_keep, ds_flop = limits[variant]
            limit = harness.time_limit(t_fixed, t_base, keep)
            ds_limit = None
            if ds_fixed is not None and ds_base is not None:
                ds_limit = harness.time_limit(ds_fixed, ds_base, ds_keep)
            row.update(keep_fraction=keep, flop_limit=flop, time_limit=limit)
            row.update(captured_share=_captured(row["ours_ratio"], limit))
            row.update(ds_keep_fraction=ds_keep, ds_flop_limit=ds_flop, ds_time_limit=ds_limit)
            row.update(ds_captured_share=_captured(row["ds_ratio"], ds_limit))
            row.update({k: o[k] for k in ("theta", "reserved") if k in o})
            row.update({f"ds_{k}": d[k] for k in ("theta", "reserved", "ltd_ops_load_s") if k in d})
        rows.append(row)
    return rows


def _ds_num(row: dict[str, Any], key: str, spec: str, why: bool = True) -> str:
    """A DeepSpeed number; its status (skipped/error) when not measured, if `why`; else "-"."""
    if row[key] is None and row["ds_status"] != "ok" and why:
        return row["ds_status"]
    return harness.fmt(row[key], spec)


def _pair(row: dict[str, Any], key: str) -> str:
    """ours / DeepSpeed of one quantity."""
    return f"{harness.fmt(row[key], '.3f')} / {harness.fmt(row[f'ds_{key}'], '.3f')}"


def variant_table(rows: list[dict[str, Any]]) -> str:
    """Every variant: ms/step, ratio to its own baseline, peak memory, ours/DeepSpeed ms."""
    header = ["shape", "B x S", "variant", "leantrain ms", "ratio", "peak MiB"]
    header += ["DeepSpeed ms", "ratio", "peak MiB", "leantrain/DeepSpeed ms"]
    cells = []
    for r in rows:
        ours_ms, ds_ms = harness.fmt(r["ours_ms"], ".1f"), _ds_num(r, "ds_ms", ".1f")
        if r["variant"] == "baseline":
            ours_ms += f" ({r['base_first_ms']:.1f}/{r['base_last_ms']:.1f})"
            if r["ds_ms"] is not None:
                ds_ms += f" ({r['ds_base_first_ms']:.1f}/{r['ds_base_last_ms']:.1f})"
        ours = [
            ours_ms,
            harness.fmt(r["ours_ratio"], ".3f"),
            harness.fmt(r["ours_peak_mib"], ".0f"),
        ]
        theirs = [ds_ms, _ds_num(r, "ds_ratio", ".3f", why=False)]
        theirs.append(_ds_num(r, "ds_peak_mib", ".0f", why=False))
        size = f"{r['batch']} x {r['seq']}"
        cells.append(
            [r["shape"], size, r["variant"], *ours, *theirs, harness.fmt(r["ours_over_ds"], ".3f")]
        )
    return harness.markdown_table(header, cells)


def technique_table(rows: list[dict[str, Any]]) -> str:
    """Per technique: both limits, DeepSpeed's step-time ratio and ours, the captured shares."""
    header = ["shape", "technique", "FLOP limit (ours / DS)", "time limit (ours / DS)"]
    header += ["DeepSpeed ratio", "leantrain ratio", "captured (ours / DS)", "leantrain/DS ms"]
    cells = []
    for r in rows:
        if "flop_limit" in r:
            limits = [_pair(r, "flop_limit"), _pair(r, "time_limit")]
            ratios = [_ds_num(r, "ds_ratio", ".3f"), harness.fmt(r["ours_ratio"], ".3f")]
            ours_over_ds = harness.fmt(r["ours_over_ds"], ".3f")
            captured = _pair(r, "captured_share")
            cells.append([r["shape"], r["variant"], *limits, *ratios, captured, ours_over_ds])
    return harness.markdown_table(header, cells)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse the command line, time every shape, print the tables last."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    harness.add_run_arguments(parser, SHAPES, repeats=3)
    parser.add_argument("--theta", type=float, default=0.5, help="θ̄ of both PLDs")
    parser.add_argument(
        "--ds-precision",
        choices=["autocast", "engine"],
        default="autocast",
        help="DeepSpeed's low precision: its torch_autocast section (fp32 weights, like our "
        "loop) or its bf16/fp16 section (low-precision weights, fp32 master copy)",
    )
    harness.add_output_arguments(parser, threads_help="torch CPU threads", compile_blocks=False)
    args = parser.parse_args(argv)
    on_gpu = harness.resolve_defaults(
        args,
        gpu_shapes="gpt2-1024,bert-128,bert-512",
        cpu_shapes="gpt2-cpu,bert-cpu",
        cpu_steps=3,
        cpu_warmup=1,
    )
    rows = harness.run_shapes(parser, args, SHAPES, run_shape)
    status = deepspeed_skip_reason(torch.device(args.device)) or f"deepspeed {DEEPSPEED_VERSION}"
    print(
        f"\ndevice {harness.device_name(on_gpu)} ({torch.get_num_threads()} CPU threads), torch "
        f"{torch.__version__}, {status}, {args.dtype} (DeepSpeed: {args.ds_precision}), "
        f"θ̄ {args.theta}, {harness.run_summary(args)}"
    )
    print(variant_table(rows))
    print()
    print(technique_table(rows))
    return rows


if __name__ == "__main__":
    main()
