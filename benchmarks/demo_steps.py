"""How much of the demo's FLOP saving a CPU turns into time, one step at a time.

Builds the demo's model twice (`leantrain.demo`: plain, and prepared with its three
techniques), moves the leantrain handle to each given step of a 400-step run (θ, reserved
length and curriculum length as that step uses them), then times forward + backward + AdamW on
the same random batch, baseline and leantrain steps interleaved so that a machine's changing
load bills both alike, and prints the median time ratio next to the FLOP ratio
(`leantrain.compare.flops`) and the captured share (1 − time ratio) / (1 − FLOP ratio).

    python benchmarks/demo_steps.py --at 200,350 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import leantrain
from leantrain.compare.flops import ModelShape, step_flops
from leantrain.demo import MODEL, SEQ_LEN, demo_raw
from leantrain.pld.schedule import layer_keep_probs


def _model() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=256, bos_token_id=0, eos_token_id=0, **MODEL)
    return GPT2LMHeadModel(cfg).train()


def measure(at: int, repeats: int) -> str:
    """One table row: the step, its schedules, time ratio, FLOP ratio, captured share."""
    raw = demo_raw()
    sections = ("progressive_layer_drop", "curriculum_learning", "data_efficiency")
    batch_size = int(raw["optim"]["micro_batch_size"])
    base, lean = _model(), _model()
    handle = leantrain.prepare(
        lean, {k: raw[k] for k in sections}, micro_batch_size=batch_size, seq_length=SEQ_LEN
    )
    for _ in range(at):
        handle.step()
    m = handle.metrics()
    opts = [torch.optim.AdamW(x.parameters(), 1e-3) for x in (base, lean)]
    ids = torch.randint(0, 256, (batch_size, SEQ_LEN))
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeats + 2):
        for k, (model, opt) in enumerate(zip((base, lean), opts, strict=True)):
            batch = {"input_ids": ids.clone(), "labels": ids.clone()}
            if k == 1:
                batch = handle.process_batch(batch)
            start = time.perf_counter()
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad()
            if i >= 2:  # two warm-up rounds
                times[k].append(time.perf_counter() - start)
    layers = int(MODEL["n_layer"])
    shape = ModelShape(layers, int(MODEL["n_embd"]), 4 * int(MODEL["n_embd"]), 256)
    ltd = raw["data_efficiency"]["data_routing"]["random_ltd"]["random_ltd_layer_id"]
    d, r = int(m.get("curriculum/difficulty", SEQ_LEN)), int(m["random_ltd/reserved_length"])
    flops = step_flops(
        shape,
        samples=batch_size,
        seq_len=d,
        ltd_layer_ids=ltd,
        reserved_length=r,
        keep_probs=layer_keep_probs(layers, m["pld/theta"]),
    ) / step_flops(shape, samples=batch_size, seq_len=SEQ_LEN)
    t_base, t_lean = statistics.median(times[0]), statistics.median(times[1])
    ratio = t_lean / t_base
    share = (1 - ratio) / (1 - flops)
    return (
        f"| {at} | {m['pld/theta']:.3f} | {r} | {d} | {1000 * t_base:.0f} | {1000 * t_lean:.0f} "
        f"| {ratio:.3f} | {flops:.3f} | {share:.2f} |"
    )


def main() -> int:
    """Print one row per step given."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--at", default="50,200,350", help="steps of the 400-step schedule")
    parser.add_argument("--repeats", type=int, default=14)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        "| step | θ | r | d | baseline ms | leantrain ms | time ratio | FLOP ratio | captured |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for at in (int(x) for x in args.at.split(",")):
        print(measure(at, args.repeats), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
