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
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from leantrain.models import find_block_list
from leantrain.pld import ProgressiveLayerDrop, convert_to_progressive_layer_drop
from leantrain.pld.schedule import expected_keep_fraction

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
    "gpt2-small": Shape("gpt2", 12, 768, 12, 3072, 50304, 16, 1024),
    "bert-base": Shape("bert", 12, 768, 12, 3072, 30528, 64, 128),
    "gpt2-cpu": Shape("gpt2", 12, 64, 4, 256, 1024, 4, 64),
    "bert-cpu": Shape("bert", 12, 64, 4, 256, 1024, 8, 32),
}


def build(shape: Shape) -> nn.Module:
    """A randomly initialised HF model of `shape` (SDPA attention, no dropout), seeded."""
    torch.manual_seed(0)
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
            bos_token_id=0,
            eos_token_id=0,
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


def flop_limit(shape: Shape, keep: float) -> float:
    """Model FLOPs with PLD / without: blocks scale by `keep`, the head does not."""
    d, s = shape.dim, shape.seq
    block = 2 * (4 * d * d + 2 * d * shape.ffn) + 4 * s * d  # per token: projections, MLP, attn
    head = 2 * d * shape.vocab + (2 * d * d if shape.family == "bert" else 0)  # (+ MLM transform)
    return (keep * shape.layers * block + head) / (shape.layers * block + head)


class _Controlled(ProgressiveLayerDrop):
    """The real schedule, or every block skipped (T_fixed) when `skip_all` is set."""

    skip_all = False

    def layer_coins(self, num_layers: int) -> tuple[list[bool], list[float]]:
        """The drawn coins, or all False."""
        keep, probs = super().layer_coins(num_layers)
        return ([False] * num_layers, probs) if self.skip_all else (keep, probs)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _frames() -> int:
    """Frames dynamo has compiled so far (each recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"])


def time_variant(
    model: nn.Module, shape: Shape, args: argparse.Namespace, before_step: Callable[[int], None]
) -> tuple[list[float], int]:
    """ms/step of `args.repeats` repeats of `args.steps` steps, and frames compiled while timed."""
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    counter = iter(range(10**9))

    def step() -> None:
        before_step(next(counter))
        ids = torch.randint(1, shape.vocab, (shape.batch, shape.seq), device=device)  # [B, S]
        with torch.autocast(device.type, dtype=dtype, enabled=args.dtype != "fp32"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)  # PyTorch's default: skipped blocks skip AdamW too

    for _ in range(args.warmup):
        step()
    frames = _frames()
    times = []
    for _ in range(args.repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000 / args.steps)
    return times, _frames() - frames


def _compile(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    """Compile each block (after any surgery) when asked."""
    if args.compile_blocks:
        torch._dynamo.reset()
        for block in find_block_list(model).blocks:
            block.compile()
    return model


def run_shape(name: str, shape: Shape, args: argparse.Namespace) -> dict[str, Any]:
    """Time every variant of one shape in one process; returns the row of the table."""
    device = torch.device(args.device)
    steady = int(20 / args.gamma)  # θ(t) = θ̄ to within e^-20
    plain = _compile(build(shape).to(device).train(), args)
    base_first, frames_base = time_variant(plain, shape, args, lambda i: None)

    pld = _Controlled(theta=args.theta, gamma=args.gamma)
    model = convert_to_progressive_layer_drop(build(shape).to(device), pld).train()
    model = _compile(model, args)
    pld_ms, frames_pld = time_variant(model, shape, args, lambda i: pld.update_state(steady + i))
    pld.skip_all = True
    skip_ms, _ = time_variant(model, shape, args, lambda i: pld.update_state(steady + i))
    del model
    base_last, _ = time_variant(plain, shape, args, lambda i: None)

    t_base = statistics.median(base_first + base_last)
    t_pld = statistics.median(pld_ms)
    t_fixed = statistics.median(skip_ms)
    keep = expected_keep_fraction(shape.layers, pld.get_theta())
    time_limit = (t_fixed + keep * (t_base - t_fixed)) / t_base
    measured = t_pld / t_base
    return {
        "shape": name,
        **asdict(shape),
        "theta": pld.get_theta(),
        "keep_fraction": keep,
        "base_first_ms": statistics.median(base_first),
        "base_last_ms": statistics.median(base_last),
        "base_ms": t_base,
        "pld_ms": t_pld,
        "fixed_ms": t_fixed,
        "measured_ratio": measured,
        "flop_limit": flop_limit(shape, keep),
        "time_limit": time_limit,
        "captured_share": (1 - measured) / (1 - time_limit),
        "recompiles_base": frames_base,
        "recompiles_pld": frames_pld,
    }


def _table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (
        "| shape | B x S | base ms (first/last) | PLD ms | all blocks skipped ms | measured | "
        "FLOP limit | time limit | captured | recompiles base/PLD |"
    )
    lines = [head, "|" + " --- |" * 10]
    for r in rows:
        recompiles = f"{r['recompiles_base']}/{r['recompiles_pld']}" if args.compile_blocks else "-"
        lines.append(
            f"| {r['shape']} | {r['batch']} x {r['seq']} | "
            f"{r['base_ms']:.1f} ({r['base_first_ms']:.1f}/{r['base_last_ms']:.1f}) | "
            f"{r['pld_ms']:.1f} | {r['fixed_ms']:.1f} ({r['fixed_ms'] / r['base_ms']:.3f}) | "
            f"{r['measured_ratio']:.3f} | {r['flop_limit']:.3f} | {r['time_limit']:.3f} | "
            f"{r['captured_share']:.2f} | {recompiles} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse the command line, time every shape, print the table last."""
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None)
    parser.add_argument("--shapes", default=None, help=f"comma list of {sorted(SHAPES)}")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--theta", type=float, default=0.5, help="θ̄ (steady-state keep ratio)")
    parser.add_argument("--gamma", type=float, default=0.001)
    parser.add_argument("--compile-blocks", action="store_true", help="torch.compile each block")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gamma <= 0:
        parser.error("--gamma: must be > 0 so that θ(t) reaches θ̄")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    on_gpu = torch.device(args.device).type == "cuda"
    args.dtype = args.dtype or ("bf16" if on_gpu else "fp32")
    args.shapes = args.shapes or ("gpt2-small,bert-base" if on_gpu else "gpt2-cpu,bert-cpu")
    args.steps = args.steps or (20 if on_gpu else 10)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 3)
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
        f"\ndevice {device_name}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.dtype}, θ̄ {args.theta}, "
        f"{args.repeats}x{args.steps} steps after {args.warmup} warm-up"
        + (", each block compiled" if args.compile_blocks else ", eager")
    )
    print(_table(rows, args))
    return rows


if __name__ == "__main__":
    main()
