"""Shared harness of the step-time benchmarks (`layerdrop.py`, `tokendrop.py`, `vs_deepspeed.py`).

Model shapes and the HF model built from one, the timing loop (warm-up, then `repeats` repeats
of `steps` timed steps), the limit formulas (FLOP limits of PLD and random-LTD, time limit and
captured share, docs: BENCHMARKS.md), the all-blocks-skipped mixin that measures T_fixed, the
random-LTD scheduler held at half length, the command-line options the scripts take, and
markdown table printing.
The scripts are run as `python benchmarks/<name>.py`, so this folder is on `sys.path` and they
import it as `import _harness as harness` (and `from _harness import Shape`).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from leantrain.random_ltd import RandomLTDScheduler

__all__ = [
    "DTYPES",
    "Shape",
    "SkipBlockMixin",
    "add_output_arguments",
    "add_run_arguments",
    "block_flops",
    "build",
    "captured_share",
    "compile_blocks",
    "device_name",
    "dynamo_counter",
    "fmt",
    "half_length_ltd_scheduler",
    "head_flops",
    "ltd_limits",
    "markdown_table",
    "measure",
    "pld_flop_limit",
    "release_memory",
    "resolve_defaults",
    "run_shapes",
    "run_summary",
    "shape_row",
    "time_limit",
    "time_steps",
    "timing_fields",
    "timing_table",
    "train_step",
]

DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
}
"""The `--dtype` choices and the autocast dtype each stands for."""


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


def build(shape: Shape, *, seed: int | None = None, bos_eos_id: int | None = None) -> nn.Module:
    """A randomly initialised HF model of `shape` (SDPA attention, no dropout).

    `seed` seeds torch first when given; `bos_eos_id` sets GPT-2's BOS/EOS token ids (left at
    the config default when None).
    """
    if seed is not None:
        torch.manual_seed(seed)
    # kwargs through a dict: the config classes take `attn_implementation` via **kwargs
    extra: dict[str, Any] = {"attn_implementation": "sdpa"}
    if shape.family == "gpt2":
        if bos_eos_id is not None:
            extra.update(bos_token_id=bos_eos_id, eos_token_id=bos_eos_id)
        return GPT2LMHeadModel(
            GPT2Config(
                vocab_size=shape.vocab,
                n_positions=shape.seq,
                n_embd=shape.dim,
                n_layer=shape.layers,
                n_head=shape.heads,
                n_inner=shape.ffn,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                **extra,
            )
        )
    return BertForMaskedLM(
        BertConfig(
            vocab_size=shape.vocab,
            hidden_size=shape.dim,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            intermediate_size=shape.ffn,
            max_position_embeddings=shape.seq,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **extra,
        )
    )


def pld_flop_limit(shape: Shape, keep: float) -> float:
    """Model FLOPs with PLD / without: blocks scale by `keep`, the head does not."""
    d, s = shape.dim, shape.seq
    block = 2 * (4 * d * d + 2 * d * shape.ffn) + 4 * s * d  # per token: projections, MLP, attn
    head = 2 * d * shape.vocab + (2 * d * d if shape.family == "bert" else 0)  # (+ MLM transform)
    return (keep * shape.layers * block + head) / (shape.layers * block + head)


def block_flops(shape: Shape, tokens: int) -> float:
    """Forward FLOPs of one block on `tokens` tokens per sample (dense attention counted)."""
    d = shape.dim
    linear = 2 * tokens * (4 * d * d + 2 * d * shape.ffn)  # QKV + out projections, MLP
    attention = 4 * tokens * tokens * d  # QK^T and AV
    return shape.batch * (linear + attention)


def head_flops(shape: Shape) -> float:
    """Forward FLOPs of the LM/MLM head (the output projection over the vocabulary)."""
    return 2.0 * shape.batch * shape.seq * shape.dim * shape.vocab


def ltd_limits(shape: Shape, reserved: int) -> tuple[float, float]:
    """(f, FLOP limit) of random-LTD at `reserved` tokens in all but the first and last block.

    f is the fraction of block FLOPs kept, (2·full + (L − 2)·dropped) / (L·full); the FLOP limit
    also counts the head, which keeps the full length.
    """
    full, dropped = block_flops(shape, shape.seq), block_flops(shape, reserved)
    f = (2 * full + (shape.layers - 2) * dropped) / (shape.layers * full)
    limit = (head_flops(shape) + f * shape.layers * full) / (
        head_flops(shape) + shape.layers * full
    )
    return f, limit


def half_length_ltd_scheduler(shape: Shape) -> RandomLTDScheduler:
    """leantrain's random-LTD scheduler held at half the sequence length (steady state)."""
    return RandomLTDScheduler(
        {
            "random_ltd_schedule": {
                "min_value": shape.seq // 2,
                "max_value": shape.seq,
                "schedule_config": {"require_steps": 10**9, "seq_per_step": 8},
            },
            "global_batch_size": shape.batch,
        }
    )


class SkipBlockMixin(nn.Module):
    """Every block is the identity: what is left is T_fixed (embeddings, head, optimizer)."""

    def forward(self, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return the hidden states unchanged."""
        return hidden


def compile_blocks(blocks: Iterable[nn.Module]) -> None:
    """Reset dynamo, then `torch.compile` each block in place."""
    torch._dynamo.reset()
    for block in blocks:
        block.compile()


def dynamo_counter(group: str, key: str) -> int:
    """Dynamo's counter `group`/`key` so far (e.g. frames/total, stats/unique_graphs)."""
    from torch._dynamo.utils import counters

    return int(counters[group][key])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    shape: Shape,
    args: argparse.Namespace,
    *,
    low: int,
    set_to_none: bool,
) -> Callable[[], None]:
    """One forward + backward + optimizer step on fresh random tokens in [`low`, vocab).

    Autocasts to `args.dtype` unless fp32; `set_to_none` is passed to `opt.zero_grad`.
    """
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    amp = args.dtype != "fp32"

    def step() -> None:
        ids = torch.randint(low, shape.vocab, (shape.batch, shape.seq), device=device)  # [B, S]
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=set_to_none)

    return step


def time_steps(
    step: Callable[[], None],
    args: argparse.Namespace,
    after_warmup: Callable[[], None] = lambda: None,
) -> list[float]:
    """ms/step of `args.repeats` repeats of `args.steps` steps, after `args.warmup` steps.

    `after_warmup` runs once between the warm-up and the first timed repeat.
    """
    device = torch.device(args.device)
    for _ in range(args.warmup):
        step()
    after_warmup()
    times = []
    for _ in range(args.repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000 / args.steps)
    return times


def release_memory(device: torch.device) -> None:
    """Collect garbage and hand cached CUDA blocks back, so the next variant starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def measure(
    setup: Callable[[dict[str, Any]], Callable[[], None]],
    args: argparse.Namespace,
    min_warmup: int = 0,
) -> dict[str, Any]:
    """Build one variant with `setup`, warm it up (at least `min_warmup` steps) and time it.

    `setup(info)` builds the model and optimizer and returns the step; it may put results in
    `info` and a `close` callable, run after timing. Returns {"ms": ms/step per repeat,
    "peak_mib": CUDA memory allocated at the peak while the variant was built, warmed up and
    timed, less what was allocated before (None off CUDA), **info}; frees the variant after.
    """
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    release_memory(device)
    before = torch.cuda.memory_allocated(device) if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    info: dict[str, Any] = {}
    step = setup(info)
    ms = time_steps(
        step, argparse.Namespace(**{**vars(args), "warmup": max(args.warmup, min_warmup)})
    )
    peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20 if cuda else None
    info.pop("close", lambda: None)()
    del step
    release_memory(device)
    return {"ms": ms, "peak_mib": peak, **info}


def fmt(value: float | None, spec: str) -> str:
    """`value` formatted with `spec`, or "-" when there is none."""
    return "-" if value is None else format(value, spec)


def time_limit(t_fixed: float, t_base: float, keep: float) -> float:
    """The time limit (T_fixed + f·T_blocks) / T_base, with T_blocks = T_base - T_fixed."""
    return (t_fixed + keep * (t_base - t_fixed)) / t_base


def captured_share(measured: float, limit: float) -> float:
    """The share of the reachable saving (1 - limit) that the measured ratio captured."""
    return (1 - measured) / (1 - limit)


def timing_fields(
    base_first: Sequence[float],
    base_last: Sequence[float],
    variant_key: str,
    variant_ms: Sequence[float],
    fixed_ms: Sequence[float],
    keep: float,
    flop_limit: float,
) -> dict[str, float]:
    """The timing columns of a row, from the raw ms/step lists (baseline first and last).

    Keys, in order: base_first_ms, base_last_ms, base_ms, `variant_key`, fixed_ms,
    measured_ratio, flop_limit, time_limit, captured_share.
    """
    t_base = statistics.median([*base_first, *base_last])
    t_variant = statistics.median(variant_ms)
    t_fixed = statistics.median(fixed_ms)
    limit = time_limit(t_fixed, t_base, keep)
    measured = t_variant / t_base
    return {
        "base_first_ms": statistics.median(base_first),
        "base_last_ms": statistics.median(base_last),
        "base_ms": t_base,
        variant_key: t_variant,
        "fixed_ms": t_fixed,
        "measured_ratio": measured,
        "flop_limit": flop_limit,
        "time_limit": limit,
        "captured_share": captured_share(measured, limit),
    }


def shape_row(name: str, shape: Shape) -> dict[str, Any]:
    """The leading columns of a row: the shape's name and its fields."""
    return {"shape": name, **asdict(shape)}


def _timing_header(variant: str) -> list[str]:
    """Table headers from base ms to captured share; `variant` names the timed variant."""
    return [
        "base ms (first/last)",
        f"{variant} ms",
        "all blocks skipped ms",
        "measured",
        "FLOP limit",
        "time limit",
        "captured",
    ]


def _timing_cells(row: Mapping[str, Any], variant_key: str) -> list[str]:
    """Table cells from base ms to captured share of a row made with `timing_fields`."""
    r = row
    return [
        f"{r['base_ms']:.1f} ({r['base_first_ms']:.1f}/{r['base_last_ms']:.1f})",
        f"{r[variant_key]:.1f}",
        f"{r['fixed_ms']:.1f} ({r['fixed_ms'] / r['base_ms']:.3f})",
        f"{r['measured_ratio']:.3f}",
        f"{r['flop_limit']:.3f}",
        f"{r['time_limit']:.3f}",
        f"{r['captured_share']:.2f}",
    ]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table of `header` and `rows` (cells already formatted)."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def add_run_arguments(parser: argparse.ArgumentParser, shapes: Iterable[str], repeats: int) -> None:
    """--device, --dtype, --shapes, --steps, --repeats, --warmup (None: resolved later)."""
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None)
    parser.add_argument("--shapes", default=None, help=f"comma list of {sorted(shapes)}")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--warmup", type=int, default=None)


def add_output_arguments(
    parser: argparse.ArgumentParser, threads_help: str, *, compile_blocks: bool = True
) -> None:
    """--compile-blocks (unless `compile_blocks` is False: always eager), --threads, --json."""
    if compile_blocks:
        parser.add_argument(
            "--compile-blocks", action="store_true", help="torch.compile each block"
        )
    else:
        parser.set_defaults(compile_blocks=False)
    parser.add_argument("--threads", type=int, default=None, help=threads_help)
    parser.add_argument("--json", default=None, help="also write the rows to this file")


def resolve_defaults(
    args: argparse.Namespace,
    *,
    gpu_shapes: str,
    cpu_shapes: str,
    cpu_steps: int,
    cpu_warmup: int,
) -> bool:
    """Fill dtype, shapes, steps and warm-up left unset by device, and apply --threads; returns
    whether on a GPU.

    On a GPU: bf16, `gpu_shapes`, 20 steps, 5 warm-up; otherwise fp32 and the `cpu_*` values.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = torch.device(args.device).type == "cuda"
    args.dtype = args.dtype or ("bf16" if on_gpu else "fp32")
    args.shapes = args.shapes or (gpu_shapes if on_gpu else cpu_shapes)
    args.steps = args.steps or (20 if on_gpu else cpu_steps)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_gpu else cpu_warmup)
    return on_gpu


def run_shapes(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    shapes: Mapping[str, Shape],
    run_shape: Callable[[str, Shape, argparse.Namespace], dict[str, Any] | list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Run `run_shape` (one row, or a list of rows, per shape) on each of `args.shapes`,
    printing each row as JSON as it comes.

    Unknown names are a parser error before anything runs; the rows also go to `args.json`.
    """
    names = args.shapes.split(",")
    for name in names:
        if name not in shapes:
            parser.error(f"--shapes: unknown {name!r}; choose from {sorted(shapes)}")
    rows: list[dict[str, Any]] = []
    for name in names:
        out = run_shape(name, shapes[name], args)
        for row in out if isinstance(out, list) else [out]:
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    return rows


def run_summary(args: argparse.Namespace) -> str:
    """How the timing ran: repeats x steps after the warm-up, compiled or eager."""
    mode = ", each block compiled" if args.compile_blocks else ", eager"
    return f"{args.repeats}x{args.steps} steps after {args.warmup} warm-up{mode}"


def device_name(on_gpu: bool) -> str:
    """The CUDA device's name, or "cpu"."""
    return torch.cuda.get_device_name() if on_gpu else "cpu"


def timing_table(
    rows: Iterable[Mapping[str, Any]],
    *,
    variant: str,
    variant_key: str,
    counts: tuple[str, str, str],
    compiled: bool,
    extra: Sequence[tuple[str, str]] = (),
) -> str:
    """The markdown table of the rows: shape, B x S, `extra`, the timing columns, `counts`.

    `variant` names the timed variant in the headers and `variant_key` is its ms column;
    `extra` holds (header, key) pairs shown after B x S; `counts` is (header, base key,
    variant key) of the compile counters, shown as base/variant when `compiled`, else "-".
    """
    header = ["shape", "B x S", *(title for title, _ in extra), *_timing_header(variant), counts[0]]
    cells = [
        [
            r["shape"],
            f"{r['batch']} x {r['seq']}",
            *(f"{r[key]}" for _, key in extra),
            *_timing_cells(r, variant_key),
            f"{r[counts[1]]}/{r[counts[2]]}" if compiled else "-",
        ]
        for r in rows
    ]
    return markdown_table(header, cells)
