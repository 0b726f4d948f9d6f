"""Step time of random-LTD against the plain model, next to the limits it could reach.

One run times, per shape: the plain model (first and last), random-LTD at half length in all
but the first and last block, and the model with every block skipped (T_fixed), each as
forward + backward + AdamW on fresh random tokens. It prints the measured ratio, the FLOP limit,
the time limit (T_fixed + f·T_blocks) / T_base and the captured share (docs: BENCHMARKS.md).

    python benchmarks/tokendrop.py                       # small CPU shapes, < 1 minute
    python benchmarks/tokendrop.py --device cuda --dtype bf16 --shapes gpt2-1024,bert-128,bert-512
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import _harness as harness
import torch
from _harness import Shape
from torch import nn

from leantrain.models import find_block_list
from leantrain.random_ltd import convert_to_random_ltd, revert_random_ltd
from leantrain.surgery import add_mixin, remove_mixin

__all__ = ["SHAPES", "Shape", "main"]


SHAPES = {
    "gpt2-1024": Shape("gpt2", 12, 768, 12, 3072, 50304, 16, 1024),
    "bert-128": Shape("bert", 12, 768, 12, 3072, 30528, 128, 128),
    "bert-512": Shape("bert", 12, 768, 12, 3072, 30528, 32, 512),
    "gpt2-cpu": Shape("gpt2", 6, 128, 4, 512, 2048, 4, 256),
    "bert-cpu": Shape("bert", 6, 128, 4, 512, 2048, 8, 128),
}


def _graphs() -> int:
    return harness.dynamo_counter("stats", "unique_graphs")


def time_variant(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    shape: Shape,
    args: argparse.Namespace,
    before_step: Callable[[], object] = lambda: None,
) -> list[float]:
    """Median-able list of ms/step over `args.repeats` repeats of `args.steps` timed steps."""
    # set_to_none=False: skipped blocks keep zero grads, so AdamW still runs
    train = harness.train_step(model, opt, shape, args, low=0, set_to_none=False)

    def step() -> None:
        before_step()
        train()

    return harness.time_steps(step, args)


def run_shape(name: str, shape: Shape, args: argparse.Namespace) -> dict[str, Any]:
    """Time every variant of one shape in one process; returns the row of the table."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = harness.build(shape).to(device).train()
    blocks = find_block_list(model).blocks
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)

    def compiled(variant: Callable[[], list[float]]) -> tuple[list[float], int]:
        if args.compile_blocks:
            harness.compile_blocks(blocks)
        before = _graphs()
        out = variant()
        graphs = _graphs() - before
        for block in blocks:
            block._compiled_call_impl = None  # back to eager for the next variant
        return out, graphs

    sched = harness.half_length_ltd_scheduler(shape)

    def ltd() -> list[float]:
        convert_to_random_ltd(model, sched)
        try:
            return time_variant(model, opt, shape, args, sched.step)
        finally:
            revert_random_ltd(model)

    def skip() -> list[float]:
        for block in blocks:
            add_mixin(block, harness.SkipBlockMixin)
        try:
            return time_variant(model, opt, shape, args)
        finally:
            for block in blocks:
                remove_mixin(block, harness.SkipBlockMixin)

    base_first, graphs_base = compiled(lambda: time_variant(model, opt, shape, args))
    ltd_ms, graphs_ltd = compiled(ltd)
    skip_ms, _ = compiled(skip)
    base_last, _ = compiled(lambda: time_variant(model, opt, shape, args))

    reserved = sched.current_seq
    f, flop_limit = harness.ltd_limits(shape, reserved)
    return {
        **harness.shape_row(name, shape),
        "reserved": reserved,
        **harness.timing_fields(base_first, base_last, "ltd_ms", ltd_ms, skip_ms, f, flop_limit),
        "graphs_base": graphs_base,
        "graphs_ltd": graphs_ltd,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse the command line, time every shape, print the table last."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    harness.add_run_arguments(parser, SHAPES, repeats=3)
    harness.add_output_arguments(parser, threads_help="CPU threads (torch default)")
    args = parser.parse_args(argv)
    on_gpu = harness.resolve_defaults(
        args,
        gpu_shapes="gpt2-1024,bert-128,bert-512",
        cpu_shapes="gpt2-cpu,bert-cpu",
        cpu_steps=3,
        cpu_warmup=1,
    )
    rows = harness.run_shapes(parser, args, SHAPES, run_shape)
    print(
        f"\ndevice {harness.device_name(on_gpu)} ({torch.get_num_threads()} CPU threads), torch "
        f"{torch.__version__}, {args.dtype}, "
        f"{harness.run_summary(args)}"
    )
    print(
        harness.timing_table(
            rows,
            variant="LTD",
            variant_key="ltd_ms",
            counts=("graphs base/LTD", "graphs_base", "graphs_ltd"),
            compiled=args.compile_blocks,
            extra=[("r", "reserved")],
        )
    )
    return rows


if __name__ == "__main__":
    main()
