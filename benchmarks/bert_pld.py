"""The encoder workload (CPU; `--scale gpu` for one GPU): Pre-LN BERT masked-LM pre-training with PLD (and random-LTD)
on WikiText-2 at equal quality, then GLUE fine-tuning from both arms at equal pre-training cost.

1. Vocabulary. BERT's 30,522-piece vocabulary makes the MLM head (2·n·d·V FLOPs per sample,
   untouched by PLD) dwarf a small encoder, so the run derives a smaller WordPiece vocabulary
   from it: the special tokens, every character of the pre-training text and of printable ASCII
   with its `##` form (so any such word still tokenizes), then the pieces most frequent in the pre-training text under the full vocabulary,
   written to `<work>/vocab-<V>/vocab.txt` in BERT's order ([PAD] stays id 0). GLUE text is
   tokenized with the same file.
2. Pre-training. `recipes/bert_mlm_pld.yaml` resized (a deep, narrow `roberta-prelayernorm`,
   i.e. Pre-LN BERT), WikiText-2's valid split trains and its test split is the reported
   validation split (the train split is not in the shared data). `leantrain compare` runs the
   arms baseline, pld and pld+ltd (random-LTD in blocks 1..L-2, encoder padding-aware) at
   their budgets (the baseline one longer, so the frontier brackets them), each with its own
   schedule, scored on the whole test split, frontiers on seconds, layer-tokens and FLOPs. The
   technique arms' budgets include the step count whose FLOPs
   (analytic, from the schedules) equal the baseline's largest run: the equal-cost pair.
3. Fine-tuning. From the baseline's largest run and the equal-cost run of each arm named by
   `--glue-arms` (default baseline and pld):
   SST-2, MRPC and RTE (`recipes/glue_*.yaml`; the same steps, batch and LR for every model,
   several seeds), official dev metrics (accuracy; F1 and accuracy; accuracy).

    python benchmarks/bert_pld.py                 # ~35-40 min on 2 quiet CPU cores
    python benchmarks/bert_pld.py --scale smoke   # tiny, a minute (the test)
    python benchmarks/bert_pld.py --scale gpu     # 12x384 on one GPU, ~7 min (estimated)

Writes `<out>/bert_pld.md` and `.json` (and compare's outputs under `<out>/mlm/`). Data:
`--data-root` (default $LEANTRAIN_DATA_ROOT, else ../shared/data) must hold DATA_FILES.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import shlex
import statistics
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leantrain.compare.arms import BASELINE, arm_recipe, scale_to_budget
from leantrain.compare.cli import compare, read_raw_recipe
from leantrain.compare.flops import ModelShape, step_flops
from leantrain.files import atomic_write_json
from leantrain.pld.schedule import layer_keep_probs, pld_theta
from leantrain.random_ltd.scheduler import reserved_length
from leantrain.trainer import load_recipe, train
from leantrain.trainer.recipe import DATA_ROOT_ENV

REPO = Path(__file__).resolve().parents[1]
GLUE = {"sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE"}
DATA_FILES = [
    "lm/wikitext-2/wiki.valid.tokens",
    "lm/wikitext-2/wiki.test.tokens",
    "tokenizers/bert-base-uncased/vocab.txt",
    *(f"glue/{d}/{s}.tsv" for d in GLUE.values() for s in ("train", "dev")),
]
ARMS = [BASELINE, "pld", "pld+ltd"]


@dataclass(frozen=True)
class Scale:
    """Sizes of one scale of the benchmark."""

    vocab: int
    layers: int
    hidden: int
    heads: int
    batch: int
    lr: float
    #: budgets of every arm; the technique arms also run the equal-cost count of the largest
    budgets: tuple[int, ...]
    #: a longer baseline run, so that technique runs below the baseline's loss at the largest
    #: budget still lie on its frontier (interpolated, not "not reached")
    baseline_extra: int
    #: θ falls to 0.5 with γ = gamma_runs / steps (the paper's θ reaches θ̄ early in the run)
    gamma_runs: float
    ltd_min: int
    glue_steps: dict[str, int]
    glue_batch: int
    glue_lr: float
    seeds: tuple[int, ...]
    #: further overrides of the pre-training and of the fine-tuning recipes
    extra: tuple[str, ...] = ()
    glue_extra: tuple[str, ...] = ()


SCALES = {
    "cpu": Scale(
        vocab=4096,
        layers=8,
        hidden=128,
        heads=4,
        batch=32,
        lr=1e-3,
        budgets=(150, 300),
        baseline_extra=450,
        gamma_runs=10.0,
        ltd_min=64,
        glue_steps={"sst2": 400, "mrpc": 300, "rte": 200},
        glue_batch=32,
        glue_lr=3e-4,
        seeds=(1, 2, 3),
    ),
    # One GPU (bf16 by the recipe's precision: auto), within the runbook's 9-minute command
    # (benchmarks/gpu_runbook.py, plan bert). WikiText-2's 0.26M training tokens still bound it:
    # the largest run sees about 14 epochs (the CPU scale: 7), so it stays a check of PLD's
    # payoff at a wider, deeper encoder, not a larger-data result.
    "gpu": Scale(
        vocab=8192,
        layers=12,
        hidden=384,
        heads=6,
        batch=32,
        lr=5e-4,
        budgets=(300, 600),
        baseline_extra=900,
        gamma_runs=10.0,
        ltd_min=64,
        glue_steps={"sst2": 600, "mrpc": 300, "rte": 200},
        glue_batch=32,
        glue_lr=1e-4,
        seeds=(1, 2),
    ),
    "smoke": Scale(
        vocab=600,
        layers=4,
        hidden=32,
        heads=2,
        batch=4,
        lr=1e-3,
        budgets=(2, 4),
        baseline_extra=6,
        gamma_runs=2.0,
        ltd_min=16,
        glue_steps={"sst2": 2, "mrpc": 2, "rte": 2},
        glue_batch=4,
        glue_lr=3e-4,
        seeds=(1,),
        extra=("data.subset=32", "data.valid_subset=8", "data.seq_len=32"),
        glue_extra=("data.subset=16", "data.valid_subset=16", "data.seq_len=32"),
    ),
}


# -- 1. vocabulary ---------------------------------------------------------------------------


def reduced_vocab(full: Path, texts: list[Path], size: int, out: Path) -> Path:
    """A `size`-piece WordPiece vocabulary from `full` (see the module docstring); cached."""
    target = out / f"vocab-{size}"
    if (target / "vocab.txt").is_file():
        return target
    from transformers import BertTokenizer

    pieces = full.read_text(encoding="utf-8").splitlines()
    tok = BertTokenizer.from_pretrained(str(full.parent), local_files_only=True)
    counts: collections.Counter[int] = collections.Counter()
    chars = set(string.printable)
    for path in texts:
        lines = path.read_text(encoding="utf-8").splitlines()
        chars.update(*map(str.lower, lines))
        for start in range(0, len(lines), 5000):
            for ids in tok(lines[start : start + 5000], add_special_tokens=False)["input_ids"]:
                counts.update(ids)
    keep = {tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens}
    keep |= {i for i, p in enumerate(pieces) if p.removeprefix("##") in chars}
    for i, _ in counts.most_common():
        if len(keep) >= size:
            break
        keep.add(i)
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / "vocab.txt.tmp"
    tmp.write_text("".join(pieces[i] + "\n" for i in sorted(keep)), encoding="utf-8")
    tmp.replace(target / "vocab.txt")
    return target


# -- 2. pre-training -------------------------------------------------------------------------


def mlm_recipe(scale: Scale, vocab_dir: Path) -> dict[str, Any]:
    """recipes/bert_mlm_pld.yaml resized, with a random-LTD section for the pld+ltd arm."""
    ffn = 4 * scale.hidden
    steps = max(scale.budgets)
    sets = [
        f"model.config={{num_hidden_layers: {scale.layers}, hidden_size: {scale.hidden}, "
        f"num_attention_heads: {scale.heads}, intermediate_size: {ffn}}}",
        f"data.tokenizer_path={vocab_dir}",
        f"optim.lr={scale.lr}",
        f"optim.micro_batch_size={scale.batch}",
        f"optim.max_steps={steps}",
        f"optim.warmup_steps={max(1, steps // 50)}",  # the paper's 2% warmup, linear decay
        f"progressive_layer_drop.gamma={scale.gamma_runs / steps}",
        "eval.batch_size=64",
        *scale.extra,
    ]
    raw = read_raw_recipe(REPO / "recipes" / "bert_mlm_pld.yaml", sets)
    seq = int(raw["data"]["seq_len"])
    raw["data_efficiency"] = {
        "enabled": True,
        "data_routing": {
            "enabled": True,
            "random_ltd": {
                "enabled": True,
                "model_type": "encoder",
                "random_ltd_layer_id": list(range(1, scale.layers - 1)),
                "random_ltd_layer_num": scale.layers - 2,
                "total_layer_num": scale.layers,
                "sample_non_padding_only": True,
                "random_ltd_schedule": {
                    "min_value": min(scale.ltd_min, seq),
                    "max_value": seq,
                    "schedule_type": "fixed_linear",
                    "schedule_config": {"require_steps": steps, "seq_per_step": 16},
                },
            },
        },
    }
    return raw


def predicted_flops(raw: dict[str, Any], arm: str, steps: int) -> float:
    """Training FLOPs of `arm` at `steps`, from its schedules (before running it)."""
    import transformers

    run = scale_to_budget(arm_recipe(raw, arm), steps, reference=int(raw["optim"]["max_steps"]))
    cfg = transformers.AutoConfig.for_model(raw["model"]["family"], **raw["model"]["config"])
    vocab = len((Path(raw["data"]["tokenizer_path"]) / "vocab.txt").read_text().splitlines())
    shape = ModelShape(
        cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, vocab, mlm_head=True
    )
    seq, batch = int(run["data"]["seq_len"]), int(run["optim"]["micro_batch_size"])
    pld = run.get("progressive_layer_drop")
    ltd = (run.get("data_efficiency") or {}).get("data_routing", {}).get("random_ltd")
    total = 0.0
    for t in range(steps):
        keep = (
            layer_keep_probs(shape.layers, pld_theta(t, pld["theta"], pld["gamma"]))
            if pld
            else None
        )
        r = None
        if ltd:
            sched = ltd["random_ltd_schedule"]
            r = reserved_length(
                t,
                min_value=sched["min_value"],
                max_value=sched["max_value"],
                require_steps=sched["schedule_config"]["require_steps"],
                seq_per_step=sched["schedule_config"]["seq_per_step"],
            )
        ids = ltd["random_ltd_layer_id"] if ltd else ()
        total += step_flops(
            shape, samples=batch, seq_len=seq, ltd_layer_ids=ids, reserved_length=r, keep_probs=keep
        )
    return total


def equal_cost_steps(raw: dict[str, Any], arm: str, base_steps: int) -> int:
    """The step count at which `arm` spends the baseline's FLOPs of `base_steps` steps."""
    want = predicted_flops(raw, BASELINE, base_steps)
    lo, hi = base_steps, 3 * base_steps
    while lo < hi:  # the arm's FLOPs grow with its steps
        mid = (lo + hi) // 2
        if predicted_flops(raw, arm, mid) < want:
            lo = mid + 1
        else:
            hi = mid
    return lo


# -- 3. fine-tuning --------------------------------------------------------------------------


def finetune(
    scale: Scale, task: str, model_dir: Path, vocab_dir: Path, seed: int, work: Path
) -> dict[str, float]:
    """Fine-tune one pre-trained model on one GLUE task; its dev metrics. A finished fine-tune
    of the same recipe (its `result.json` in `work`) is reused."""
    steps = scale.glue_steps[task]
    sets = [
        f"model.pretrained={model_dir}",
        f"data.tokenizer_path={vocab_dir}",
        f"output_dir={work}",
        f"seed={seed}",
        f"optim.lr={scale.glue_lr}",
        f"optim.micro_batch_size={scale.glue_batch}",
        f"optim.max_steps={steps}",
        f"optim.warmup_steps={max(1, steps // 10)}",
        f"eval.interval={steps}",
        "eval.max_batches=null",
        "checkpoint_interval=null",
        "device=cpu",
        *scale.glue_extra,
    ]
    recipe = load_recipe(REPO / "recipes" / f"glue_{task}.yaml", sets)
    ident = json.loads(json.dumps(recipe.to_dict(), default=str))
    done = work / "result.json"
    if done.is_file() and json.loads(done.read_text())["recipe"] == ident:
        return dict(json.loads(done.read_text())["metrics"])
    final = train(recipe, overwrite=True, progress=False)  # an unfinished fine-tune is redone
    metrics = {k.removeprefix("eval/"): v for k, v in final.items() if k.startswith("eval/")}
    atomic_write_json(done, {"recipe": ident, "metrics": metrics})
    return metrics


def glue_score(task: str, m: dict[str, float]) -> float:
    """The task's headline number in points: accuracy, or mean of F1 and accuracy (MRPC)."""
    return 100 * ((m["f1"] + m["accuracy"]) / 2 if task == "mrpc" else m["accuracy"])


def main(argv: list[str] | None = None) -> int:
    """Pre-train every arm, pick the equal-cost pair, fine-tune, print the tables."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "bert_pld")
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--threads", type=int)
    parser.add_argument(
        "--glue-arms", default="baseline,pld", help="arms whose equal-cost model is fine-tuned"
    )
    parser.add_argument("--seeds", help="fine-tuning seeds, e.g. 1,2 (default: the scale's)")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    if args.seeds:
        scale = dataclasses.replace(scale, seeds=tuple(int(s) for s in args.seeds.split(",")))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    root = (
        args.data_root or Path(os.environ.get(DATA_ROOT_ENV, REPO.parent / "shared" / "data"))
    ).resolve()
    missing = [f for f in DATA_FILES if not (root / f).is_file()]
    if missing:
        parser.error(f"data root {root} lacks {missing} (set --data-root or {DATA_ROOT_ENV})")
    os.environ[DATA_ROOT_ENV] = str(root)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # no load report per fine-tuned model
    hf_logging.disable_progress_bar()
    out: Path = args.output_dir.resolve()
    vocab_dir = reduced_vocab(
        root / "tokenizers/bert-base-uncased/vocab.txt",
        [root / "lm/wikitext-2/wiki.valid.tokens"],
        scale.vocab,
        out,
    )
    raw = mlm_recipe(scale, vocab_dir)
    top = max(scale.budgets)
    pair = {arm: equal_cost_steps(raw, arm, top) for arm in ARMS[1:]}
    budgets = {BASELINE: sorted({*scale.budgets, scale.baseline_extra})}
    budgets.update({a: sorted({*scale.budgets, s}) for a, s in pair.items()})
    analysis = compare(
        raw,
        source=f"benchmarks/bert_pld.py --scale {args.scale}",
        arms=ARMS,
        budgets=budgets,
        output_dir=out / "mlm",
        title="Pre-LN BERT MLM on WikiText-2: PLD and PLD + random-LTD",
    )
    models = {a: s for a, s in {BASELINE: top, **pair}.items() if a in args.glue_arms.split(",")}
    by_run = {(r.arm, r.steps): r for r in analysis.results}
    glue: dict[str, dict[str, list[dict[str, float]]]] = {}
    for arm, steps in models.items():
        model_dir = Path(by_run[(arm, steps)].run_dir) / "model"
        for task in GLUE:
            for seed in scale.seeds:
                work = out / "glue" / arm / task / f"seed{seed}"
                m = finetune(scale, task, model_dir, vocab_dir, seed, work)
                glue.setdefault(arm, {}).setdefault(task, []).append(m)
                print(f"  {arm} {task} seed {seed}: {m}", flush=True)
    text = report(analysis, models, by_run, glue, scale, args)
    text += "\n\nPre-training (compare):\n\n" + (out / "mlm" / "compare.md").read_text()
    (out / "bert_pld.md").write_text(text)
    (out / "bert_pld.json").write_text(
        json.dumps({"models": models, "glue": glue}, indent=1, default=str) + "\n"
    )
    print("\n" + text)
    return 0


def report(
    analysis: Any,
    models: dict[str, int],
    by_run: dict[tuple[str, int], Any],
    glue: dict[str, dict[str, list[dict[str, float]]]],
    scale: Scale,
    args: argparse.Namespace,
) -> str:
    """The fine-tuning table (mean ± spread over seeds) and the average gap to the baseline."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        f"commit {commit}; command `python benchmarks/bert_pld.py {shlex.join(_argv(args))}`; "
        f"vocabulary {scale.vocab}; seeds {list(scale.seeds)}",
        "",
        "| pre-trained model | steps | pre-training TFLOPs | MLM loss ± SE | SST-2 acc | "
        "MRPC F1/acc | RTE acc | mean |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    means: dict[str, float] = {}
    for arm, steps in models.items():
        r = by_run[(arm, steps)]
        per = {}
        cells = []
        for task in GLUE:
            runs = glue[arm][task]
            scores = [glue_score(task, m) for m in runs]
            per[task] = statistics.mean(scores)
            spread = f" ± {statistics.stdev(scores):.1f}" if len(scores) > 1 else ""
            if task == "mrpc":
                f1 = statistics.mean(100 * m["f1"] for m in runs)
                acc = statistics.mean(100 * m["accuracy"] for m in runs)
                cells.append(f"{f1:.1f}/{acc:.1f}{spread}")
            else:
                cells.append(f"{per[task]:.1f}{spread}")
        means[arm] = statistics.mean(per.values())
        lines.append(
            f"| {arm} | {steps} | {r.flops / 1e12:.2f} | {r.loss:.4f} ± {r.se:.4f} | "
            + " | ".join(cells)
            + f" | {means[arm]:.1f} |"
        )
    gaps = ", ".join(f"{a} {means[a] - means[BASELINE]:+.1f}" for a in models if a != BASELINE)
    lines += ["", f"Mean GLUE score minus the baseline's (points): {gaps}."]
    return "\n".join(lines)


def _argv(args: argparse.Namespace) -> list[str]:
    out = ["--scale", args.scale, "--glue-arms", args.glue_arms]
    if args.threads:
        out += ["--threads", str(args.threads)]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
