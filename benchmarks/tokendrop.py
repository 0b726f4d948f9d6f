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
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from leantrain.models import find_block_list
from leantrain.random_ltd import RandomLTDScheduler, convert_to_random_ltd, revert_random_ltd
from leantrain.surgery import add_mixin, remove_mixin

__all__ = ["SHAPES", "Shape", "main"]


@dataclass(frozen=True)
class Shape:
    """A model shape to time: family, depth, width, heads, FFN width, vocab, batch, length."""

    family: str
    layers: int
    dim: int
    heads: int
    ffn: int
    vocab: int
    batch: int
    seq: int


SHAPES = {
    "gpt2-1024": Shape("gpt2", 12, 768, 12, 3072, 50304, 16, 1024),
    "bert-128": Shape("bert", 12, 768, 12, 3072, 30528, 128, 128),
    "bert-512": Shape("bert", 12, 768, 12, 3072, 30528, 32, 512),
    "gpt2-cpu": Shape("gpt2", 6, 128, 4, 512, 2048, 4, 256),
    "bert-cpu": Shape("bert", 6, 128, 4, 512, 2048, 8, 128),
}


def build(shape: Shape) -> nn.Module:
    """A randomly initialised HF model of `shape` (SDPA attention, no dropout)."""
    if shape.family == "gpt2":
        cfg: Any = GPT2Config(
            vocab_size=shape.vocab,
            n_positions=shape.seq,
            n_embd=shape.dim,
            n_layer=shape.layers,
            n_head=shape.heads,
            n_inner=shape.ffn,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            attn_implementation="sdpa",
        )
        return GPT2LMHeadModel(cfg)
    cfg = BertConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.dim,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.ffn,
        max_position_embeddings=shape.seq,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="sdpa",
    )
    return BertForMaskedLM(cfg)


def block_flops(shape: Shape, tokens: int) -> float:
    """Forward FLOPs of one block on `tokens` tokens per sample (dense attention counted)."""
    d = shape.dim
    linear = 2 * tokens * (4 * d * d + 2 * d * shape.ffn)  # QKV + out projections, MLP
    attention = 4 * tokens * tokens * d  # QK^T and AV
    return shape.batch * (linear + attention)


def head_flops(shape: Shape) -> float:
    """Forward FLOPs of the LM/MLM head (the output projection over the vocabulary)."""
    return 2.0 * shape.batch * shape.seq * shape.dim * shape.vocab


class _SkipMixin(nn.Module):
    """Every block is the identity: what is left is T_fixed (embeddings, head, optimizer)."""

    def forward(self, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return the hidden states unchanged."""
        return hidden


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def time_variant(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    shape: Shape,
    args: argparse.Namespace,
    before_step: Callable[[], None] = lambda: None,
) -> list[float]:
    """Median-able list of ms/step over `args.repeats` repeats of `args.steps` timed steps."""
    device = torch.device(args.device)
    amp = args.dtype != "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]

    def step() -> None:
        before_step()
        ids = torch.randint(0, shape.vocab, (shape.batch, shape.seq), device=device)  # [B, S]
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # skipped blocks keep zero grads: AdamW still runs

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000 / args.steps)
    return times


def run_shape(name: str, shape: Shape, args: argparse.Namespace) -> dict[str, Any]:
    """Time every variant of one shape in one process; returns the row of the table."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build(shape).to(device).train()
    blocks = find_block_list(model).blocks
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)

    def compiled(variant: Callable[[], list[float]]) -> tuple[list[float], int]:
        if args.compile_blocks:
            torch._dynamo.reset()
            for block in blocks:
                block.compile()
        before = _graphs()
        out = variant()
        graphs = _graphs() - before
        for block in blocks:
            block._compiled_call_impl = None  # back to eager for the next variant
        return out, graphs

    half = shape.seq // 2
    sched = RandomLTDScheduler(
        {
            "random_ltd_schedule": {
                "min_value": half,
                "max_value": shape.seq,
                "schedule_config": {"require_steps": 10**9, "seq_per_step": 8},
            },
            "global_batch_size": shape.batch,
        }
    )

    def ltd() -> list[float]:
        convert_to_random_ltd(model, sched)
        try:
            return time_variant(model, opt, shape, args, sched.step)
        finally:
            revert_random_ltd(model)

    def skip() -> list[float]:
        for block in blocks:
            add_mixin(block, _SkipMixin)
        try:
            return time_variant(model, opt, shape, args)
        finally:
            for block in blocks:
                remove_mixin(block, _SkipMixin)

    base_first, graphs_base = compiled(lambda: time_variant(model, opt, shape, args))
    ltd_ms, graphs_ltd = compiled(ltd)
    skip_ms, _ = compiled(skip)
    base_last, _ = compiled(lambda: time_variant(model, opt, shape, args))

    t_base = statistics.median(base_first + base_last)
    t_ltd = statistics.median(ltd_ms)
    t_fixed = statistics.median(skip_ms)
    reserved = sched.current_seq
    n_ltd = shape.layers - 2
    full, dropped = block_flops(shape, shape.seq), block_flops(shape, reserved)
    f = (2 * full + n_ltd * dropped) / (shape.layers * full)
    flop_limit = (head_flops(shape) + f * shape.layers * full) / (
        head_flops(shape) + shape.layers * full
    )
    time_limit = (t_fixed + f * (t_base - t_fixed)) / t_base
    measured = t_ltd / t_base
    return {
        "shape": name,
        **asdict(shape),
        "reserved": reserved,
        "base_first_ms": statistics.median(base_first),
        "base_last_ms": statistics.median(base_last),
        "base_ms": t_base,
        "ltd_ms": t_ltd,
        "fixed_ms": t_fixed,
        "measured_ratio": measured,
        "flop_limit": flop_limit,
        "time_limit": time_limit,
        "captured_share": (1 - measured) / (1 - time_limit),
        "graphs_base": graphs_base,
        "graphs_ltd": graphs_ltd,
    }


def _table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (
        "| shape | B x S | r | base ms (first/last) | LTD ms | all blocks skipped ms | "
        "measured | FLOP limit | time limit | captured | graphs base/LTD |"
    )
    lines = [head, "|" + " --- |" * 11]
    for r in rows:
        graphs = f"{r['graphs_base']}/{r['graphs_ltd']}" if args.compile_blocks else "-"
        lines.append(
            f"| {r['shape']} | {r['batch']} x {r['seq']} | {r['reserved']} | "
            f"{r['base_ms']:.1f} ({r['base_first_ms']:.1f}/{r['base_last_ms']:.1f}) | "
            f"{r['ltd_ms']:.1f} | {r['fixed_ms']:.1f} ({r['fixed_ms'] / r['base_ms']:.3f}) | "
            f"{r['measured_ratio']:.3f} | {r['flop_limit']:.3f} | {r['time_limit']:.3f} | "
            f"{r['captured_share']:.2f} | {graphs} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse the command line, time every shape, print the table last."""
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None)
    parser.add_argument("--shapes", default=None, help=f"comma list of {sorted(SHAPES)}")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--compile-blocks", action="store_true", help="torch.compile each block")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = torch.device(args.device).type == "cuda"
    args.dtype = args.dtype or ("bf16" if on_gpu else "fp32")
    args.shapes = args.shapes or ("gpt2-1024,bert-128,bert-512" if on_gpu else "gpt2-cpu,bert-cpu")
    args.steps = args.steps or (20 if on_gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 1)
    rows = []
    for name in args.shapes.split(","):
        if name not in SHAPES:
            parser.error(f"--shapes: unknown {name!r}; choose from {sorted(SHAPES)}")
        rows.append(run_shape(name, SHAPES[name], args))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    device_name = torch.cuda.get_device_name() if on_gpu else "cpu"
    print(
        f"\ndevice {device_name} ({torch.get_num_threads()} CPU threads), torch "
        f"{torch.__version__}, {args.dtype}, "
        f"{args.repeats}x{args.steps} steps after {args.warmup} warm-up"
        + (", each block compiled" if args.compile_blocks else ", eager")
    )
    print(_table(rows, args))
    return rows


if __name__ == "__main__":
    main()
