"""Step time of progressive layer dropping against the plain model, next to its limits.

One run times, per shape: the plain model (first and last), PLD at steady state (θ(t) = θ̄), and
the converted model with every block skipped (T_fixed), each as forward + backward + AdamW on
fresh random tokens. It prints the measured ratio, the FLOP limit, the time limit
(T_fixed + f·T_blocks) / T_base with f the mean keep probability, and the captured share
(docs: BENCHMARKS.md).

    python benchmarks/layerdrop.py                        # small CPU shapes, < 1 minute
    python benchmarks/layerdrop.py --device cuda --dtype bf16 --shapes gpt2-small,bert-base
    python benchmarks/layerdrop.py --device cuda --compile-blocks
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

import _harness as harness
import torch
from _harness import Shape
from torch import nn

from leantrain.models import find_block_list
from leantrain.pld import ProgressiveLayerDrop, convert_to_progressive_layer_drop
from leantrain.pld.schedule import expected_keep_fraction

__all__ = ["SHAPES", "Shape", "main"]


SHAPES = {
    "gpt2-small": Shape("gpt2", 12, 768, 12, 3072, 50304, 16, 1024),
    "bert-base": Shape("bert", 12, 768, 12, 3072, 30528, 64, 128),
    "gpt2-cpu": Shape("gpt2", 12, 64, 4, 256, 1024, 4, 64),
    "bert-cpu": Shape("bert", 12, 64, 4, 256, 1024, 8, 32),
}


def _build(shape: Shape) -> nn.Module:
    """The model of `shape`, seeded, with GPT-2's BOS/EOS at token 0."""
    return harness.build(shape, seed=0, bos_eos_id=0)


class _Controlled(ProgressiveLayerDrop):
    """The real schedule, or every block skipped (T_fixed) when `skip_all` is set."""

    skip_all = False

    def layer_coins(self, num_layers: int) -> tuple[list[bool], list[float]]:
        """The drawn coins, or all False."""
        keep, probs = super().layer_coins(num_layers)
        return ([False] * num_layers, probs) if self.skip_all else (keep, probs)


def _frames() -> int:
    """Frames dynamo has compiled so far (each recompile adds one)."""
    return harness.dynamo_counter("frames", "total")


def time_variant(
    model: nn.Module, shape: Shape, args: argparse.Namespace, before_step: Callable[[int], None]
) -> tuple[list[float], int]:
    """ms/step of `args.repeats` repeats of `args.steps` steps, and frames compiled while timed."""
    fused = torch.device(args.device).type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    # set_to_none: PyTorch's default, so skipped blocks skip AdamW too
    train = harness.train_step(model, opt, shape, args, low=1, set_to_none=True)
    counter = iter(range(10**9))

    def step() -> None:
        before_step(next(counter))
        train()

    frames = 0

    def mark() -> None:
        nonlocal frames
        frames = _frames()

    times = harness.time_steps(step, args, after_warmup=mark)
    return times, _frames() - frames


def _compile(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    """Compile each block (after any surgery) when asked."""
    if args.compile_blocks:
        harness.compile_blocks(find_block_list(model).blocks)
    return model


def run_shape(name: str, shape: Shape, args: argparse.Namespace) -> dict[str, Any]:
    """Time every variant of one shape in one process; returns the row of the table."""
    device = torch.device(args.device)
    steady = int(20 / args.gamma)  # θ(t) = θ̄ to within e^-20
    plain = _compile(_build(shape).to(device).train(), args)
    base_first, frames_base = time_variant(plain, shape, args, lambda i: None)

    pld = _Controlled(theta=args.theta, gamma=args.gamma)
    model = convert_to_progressive_layer_drop(_build(shape).to(device), pld).train()
    model = _compile(model, args)
    pld_ms, frames_pld = time_variant(model, shape, args, lambda i: pld.update_state(steady + i))
    pld.skip_all = True
    skip_ms, _ = time_variant(model, shape, args, lambda i: pld.update_state(steady + i))
    del model
    base_last, _ = time_variant(plain, shape, args, lambda i: None)

    keep = expected_keep_fraction(shape.layers, pld.get_theta())
    flop_limit = harness.pld_flop_limit(shape, keep)
    return {
        **harness.shape_row(name, shape),
        "theta": pld.get_theta(),
        "keep_fraction": keep,
        **harness.timing_fields(base_first, base_last, "pld_ms", pld_ms, skip_ms, keep, flop_limit),
        "recompiles_base": frames_base,
        "recompiles_pld": frames_pld,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse the command line, time every shape, print the table last."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    harness.add_run_arguments(parser, SHAPES, repeats=5)
    parser.add_argument("--theta", type=float, default=0.5, help="θ̄ (steady-state keep ratio)")
    parser.add_argument("--gamma", type=float, default=0.001)
    harness.add_output_arguments(parser, threads_help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.gamma <= 0:
        parser.error("--gamma: must be > 0 so that θ(t) reaches θ̄")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    on_gpu = harness.resolve_defaults(
        args,
        gpu_shapes="gpt2-small,bert-base",
        cpu_shapes="gpt2-cpu,bert-cpu",
        cpu_steps=10,
        cpu_warmup=3,
    )
    rows = harness.run_shapes(parser, args, SHAPES, run_shape)
    print(
        f"\ndevice {harness.device_name(on_gpu)}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.dtype}, θ̄ {args.theta}, "
        f"{harness.run_summary(args)}"
    )
    print(
        harness.timing_table(
            rows,
            variant="PLD",
            variant_key="pld_ms",
            counts=("recompiles base/PLD", "recompiles_base", "recompiles_pld"),
            compiled=args.compile_blocks,
        )
    )
    return rows


if __name__ == "__main__":
    main()
