"""Time to quality on real data: baseline against leantrain, both to the baseline's final loss.

One command per workload, each run in this process through the reference trainer
(`leantrain.trainer.train`) from the recipe files in `recipes/` with overrides, so the runs are
the recipes users see, resized:

- `gpt`:  GPT-2 from scratch on tiny-shakespeare (GPT-2 BPE; the last 10% validates). Baseline,
  then sequence-length warmup + random-LTD (layers 1..L-2, LR decaying by consumed layer-tokens)
  for up to 1.3x the baseline's steps, stopping at the first evaluation at or below the
  baseline's final validation loss (`eval.stop_at_loss`).
- `bert`: masked-LM pre-training of a Pre-LN BERT (`roberta-prelayernorm`, BERT WordPiece) on
  WikiText-2 (valid trains, test validates), baseline and PLD for the same steps; then each
  model fine-tuned on SST-2, MRPC, RTE, CoLA and STS-B (fixed short steps, official dev
  metrics) next to the published PLD table quoted in SPEC.md.
- `vit`:  ViT trained from scratch on a CIFAR-10 subset (no pretrained weights travel), baseline
  then random-LTD (layers 1..L-2, CLS kept), stopping as for `gpt`; final accuracy as well.

Targets and times: the target is the baseline's final validation loss; time, tokens and
layer-tokens to it are interpolated between evaluations (`report.time_to_loss`) of each run's
training wall-clock (`wall_s`: evaluation excluded). A short untimed warm-up run first takes
CUDA/cuBLAS initialisation out of the baseline's clock. A run that never gets there says "not
reached". When the baseline's validation loss bottoms out before its end (it overfits: these
corpora are small), the time to its best loss is reported as well.

Sizes on one H100 (bf16 autocast, SDPA, eager), estimated from FLOPs at 150 TFLOP/s, i.e. ~15%
of dense bf16 peak (BENCHMARKS.md measured ~250 TFLOP/s for GPT-2-small 16x1024; small shapes
and HF's per-layer launches run lower). The corpora are small (tiny-shakespeare is 0.34M GPT-2
tokens, WikiText-2 valid 0.26M WordPiece tokens), so the step counts are set by epochs (past
~10-25 the models overfit), not by the GPU budget:

| workload | model | batch x tokens | steps (technique <=) | FLOP/step | est. train | est. command |
| --- | --- | --- | --- | --- | --- | --- |
| gpt | GPT-2-small 12x768, vocab 50304 | 8 x 1024 | 440 (572), ~12 epochs | 7.0 T | 21 + 27 s | ~1.5 min |
| bert | PreLN BERT 12x512, FFN 2048 | 128 x 128 | 400 (400), ~25 epochs | 5.4 T | 2 x 15 s | ~3 min |
| glue | the two BERTs, 5 tasks each | 32 x <=128 | 300 per task | <=1.3 T | 10 x ~10 s | (in bert) |
| vit | ViT 12x384, patch 4, 65 tokens | 256 x 65 | 1200 (1560), ~15 epochs | 2.2 T | 24 + 31 s | ~2 min |

"est. command" adds start-up, tokenising / JPEG decoding, the warm-up run, evaluations (~20
per run) and saving models; GLUE steps are launch-bound (~30 ms), not FLOP-bound. Each command
stays well under 8 minutes; `--scale smoke` runs all three on a CPU in well under a minute.

    python benchmarks/time_to_quality.py --scale gpu --workloads gpt   # one per GPU command
    python benchmarks/time_to_quality.py --scale smoke                 # CPU check of all three
    python benchmarks/time_to_quality.py --scale gpu --workloads vit --set vit:optim.max_steps=900

Data (relative to --data-root, default $LEANTRAIN_DATA_ROOT or ../shared/data): see DATA_FILES.
The CIFAR zip may be a subset with the same layout (`cifar10/{train,test}/<class>/NNNN.jpg`);
the run takes up to 20,000 train / 5,000 test images of it.
Results (small files only: metrics.csv, TensorBoard logs, resolved recipes, report.png,
summary.md / summary.json) go to --out; checkpoints and models stay in a temporary --work-dir.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _harness as harness
import _ttq_report as report
import torch
from transformers.utils import logging as hf_logging

from leantrain.trainer import load_recipe, train
from leantrain.trainer.recipe import DATA_ROOT_ENV, Recipe
from leantrain.trainer.report import plot_runs, read_metrics

__all__ = ["DATA_FILES", "SCALES", "WORKLOADS", "Scale", "main"]

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"

GLUE = ("sst2", "mrpc", "rte", "cola", "stsb")
GLUE_FOLDERS = {"sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE", "cola": "CoLA", "stsb": "STS-B"}
CIFAR_ZIP = "vision/cifar10-jpg/cifar10_jpg.zip"

DATA_FILES: dict[str, list[str]] = {
    "gpt": [
        "lm/tiny-shakespeare/input.txt",
        "tokenizers/gpt2/vocab.json",
        "tokenizers/gpt2/merges.txt",
    ],
    "bert": [
        "lm/wikitext-2/wiki.valid.tokens",
        "lm/wikitext-2/wiki.test.tokens",
        "tokenizers/bert-base-uncased/vocab.txt",
        *(f"glue/{GLUE_FOLDERS[t]}/{split}.tsv" for t in GLUE for split in ("train", "dev")),
    ],
    "vit": [CIFAR_ZIP],
}
"""What each workload reads, relative to the data root."""


# -- sizes -----------------------------------------------------------------------------------

RECIPE_FILES = {
    "gpt": "gpt2_curriculum_ltd.yaml",
    "bert": "bert_mlm_pld.yaml",
    "vit": "vit_cifar10_ltd.yaml",
}
#: The technique run may take this many times the baseline's steps.
STEP_BUDGET = 1.3
#: Sequence-length warmup and random-LTD's length growth span these shares of the baseline's
#: steps (the random-LTD paper grows over most of the run).
CURRICULUM_SHARE, LTD_SHARE = 0.3, 0.7


@dataclass(frozen=True)
class Scale:
    """Overrides of each workload's recipe at one scale (written as on the command line), and
    the start of the technique schedules."""

    gpt: str
    bert: str
    #: the fine-tunes of both BERTs (SST-2 has 67K training rows, far more than is trained on)
    glue: str
    vit: str
    #: sequence-length warmup starts here (GPT)
    curriculum_min: int
    #: random-LTD's reserved length starts here (GPT, ViT)
    ltd_min_gpt: int
    ltd_min_vit: int
    #: random-LTD rounds its length to a multiple of this (GPT)
    ltd_step: int
    #: steps of the untimed warm-up run before the first timed one (0: none)
    warmup_steps: int
    #: torch CPU threads (None: torch's default); one is fastest for tiny models on a busy CPU
    threads: int | None = None


SCALES: dict[str, Scale] = {
    "gpu": Scale(
        gpt="""'model.config={n_layer: 12, n_embd: 768, n_head: 12, n_positions: 1024,
                vocab_size: 50304}' data.seq_len=1024 optim.lr=6e-4 optim.warmup_steps=40
            optim.micro_batch_size=8 optim.max_steps=440 eval.interval=22 eval.max_batches=null""",
        bert="""'model.config={num_hidden_layers: 12, hidden_size: 512, num_attention_heads: 8,
                intermediate_size: 2048, vocab_size: 30528}' optim.lr=5e-4 optim.warmup_steps=30
            optim.micro_batch_size=128 optim.max_steps=400 eval.interval=20 eval.max_batches=20
            progressive_layer_drop.gamma=0.01""",  # θ(t): 0.68 at step 100, 0.51 at 400
        glue="""optim.max_steps=300 optim.warmup_steps=30 optim.micro_batch_size=32
            eval.interval=60 data.subset=9600""",
        vit="""'model.config={patch_size: 4, num_channels: 3, hidden_size: 384,
                num_hidden_layers: 12, num_attention_heads: 6, intermediate_size: 1536,
                hidden_dropout_prob: 0.1}'
            data.subset=20000 data.valid_subset=5000 optim.micro_batch_size=256
            optim.warmup_steps=60 optim.max_steps=1200 eval.interval=60""",
        curriculum_min=64,
        ltd_min_gpt=128,
        ltd_min_vit=32,
        ltd_step=16,
        warmup_steps=5,
    ),
    "smoke": Scale(
        gpt="""'model.config={n_layer: 4, n_embd: 32, n_head: 2, n_positions: 64}'
            data.seq_len=64 data.valid_subset=4 optim.warmup_steps=1 optim.micro_batch_size=2
            optim.max_steps=6 eval.interval=2 eval.max_batches=2""",
        bert="""'model.config={num_hidden_layers: 4, hidden_size: 32, num_attention_heads: 2,
                intermediate_size: 64}' data.seq_len=32 data.valid_subset=8
            optim.warmup_steps=1 optim.micro_batch_size=4 optim.max_steps=4 eval.interval=2
            eval.max_batches=2 progressive_layer_drop.gamma=0.5""",
        glue="""data.seq_len=32 data.subset=16 data.valid_subset=16 optim.max_steps=1
            optim.warmup_steps=0 optim.micro_batch_size=4 eval.interval=1""",
        vit="""'model.config={patch_size: 8, num_channels: 3, hidden_size: 32,
                num_hidden_layers: 4, num_attention_heads: 2, intermediate_size: 64}'
            data.subset=64 data.valid_subset=32 optim.micro_batch_size=8 optim.warmup_steps=1
            optim.max_steps=4 eval.interval=2""",
        curriculum_min=16,
        ltd_min_gpt=16,
        ltd_min_vit=8,
        ltd_step=8,
        warmup_steps=0,
        threads=1,
    ),
}


# -- running ---------------------------------------------------------------------------------


@dataclass
class Bench:
    """Where runs go and what every run shares: scale, user overrides, device, run metadata."""

    scale: Scale
    out: Path
    work: Path
    device: str
    sets: dict[str, list[str]]
    meta: dict[str, str]

    def base(self, workload: str) -> list[str]:
        """The scale's overrides of `workload`, then the user's `--set workload:...`."""
        return [*shlex.split(getattr(self.scale, workload)), *self.sets.get(workload, [])]

    def recipe(self, file: str, overrides: Sequence[str], name: str) -> Recipe:
        """`recipes/<file>` with `overrides`, writing to the work folder, on our device."""
        fixed = [f"output_dir={self.work / name}", "checkpoint_interval=null"]
        return load_recipe(RECIPES / file, [*overrides, *fixed, f"device={self.device}"])

    def run(self, workload: str, name: str, recipe: Recipe) -> list[dict[str, float]]:
        """Train `recipe`; keep its metrics.csv, TensorBoard logs and resolved recipe."""
        final = train(recipe, overwrite=True, progress=False)  # the work folder is scratch
        src, dest = Path(recipe.output_dir), self.out / workload / "runs" / name
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        shutil.copy2(src / "metrics.csv", dest / "metrics.csv")
        shutil.copytree(src / "tb", dest / "tb")
        (dest / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=1))
        _free_memory()
        shown = {k: v for k, v in final.items() if k.startswith("eval/")}
        print(
            f"[{workload}] {name}: {int(final['step'])} steps, {final['wall_s']:.1f} s training, "
            + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()),
            flush=True,
        )
        return read_metrics(dest)

    def warm_up(self, file: str, overrides: Sequence[str]) -> None:
        """A few untimed steps, so CUDA/cuBLAS set-up is not billed to the first timed run."""
        if self.scale.warmup_steps:
            steps = f"optim.max_steps={self.scale.warmup_steps}"
            small = ["data.subset=2048", "data.valid_subset=256"]  # fewer JPEGs to decode
            recipe = self.recipe(file, [*overrides, steps, *small], "warmup")
            train(recipe, overwrite=True, progress=False)
            _free_memory()


def _free_memory() -> None:
    """Hand the finished run's GPU memory back before the next run builds its model."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def _write_summary(
    bench: Bench, workload: str, title: str, body: str, data: dict[str, Any], runs: list[str]
) -> str:
    """summary.md (metadata, body, PNG) and summary.json of one workload; returns the md."""
    folder = bench.out / workload
    png = plot_runs([folder / "runs" / r for r in runs], folder / "report.png", runs)
    meta = "\n".join(f"- {k}: {v}" for k, v in bench.meta.items())
    text = f"# time_to_quality: {title}\n\n{meta}\n\n{body}\n\n![loss curves]({png.name})\n"
    (folder / "summary.md").write_text(text)
    (folder / "summary.json").write_text(
        json.dumps(report.finite({**bench.meta, **data}), indent=1)
    )
    return text


# -- workloads -------------------------------------------------------------------------------


def _random_ltd(base: Recipe, layers: int, min_value: int, max_value: int, step: int) -> list[str]:
    """Random-LTD in layers 1..L-2 (the paper keeps the first and last whole), its length growing
    over LTD_SHARE of the baseline's steps, and the LR decaying by consumed layer-tokens over
    what the baseline consumes."""
    key = "data_efficiency.data_routing.random_ltd"
    ids, o = list(range(1, layers - 1)), base.optim
    grow = round(LTD_SHARE * o.max_steps)
    per_step = o.micro_batch_size * o.grad_accum * max_value * layers
    total, warm = o.max_steps * per_step, min(o.warmup_steps, o.max_steps) * per_step
    return [
        "data_efficiency.enabled=true",
        f"{key}.total_layer_num={layers}",
        f"{key}.random_ltd_layer_num={len(ids)}",
        f"{key}.random_ltd_layer_id={ids}",
        f"{key}.random_ltd_schedule={{min_value: {min_value}, max_value: {max_value}, "
        f"schedule_type: fixed_linear, schedule_config: {{require_steps: {grow}, "
        f"seq_per_step: {step}}}}}",
        "optim.decay=layer_tokens",
        f"{key}.layer_token_lr_schedule={{enabled: true, total_layer_tokens: {total}, "
        f"warmup_layer_tokens: {warm}, warmup_type: linear}}",
    ]


def _race(
    bench: Bench,
    workload: str,
    off: list[str],
    technique: tuple[str, Callable[[Recipe], list[str]]],
    title: str,
    extra: Sequence[str] = (),
) -> str:
    """Baseline (`off`), then the technique for up to `step_budget` x its steps, stopping at the
    first evaluation at or below the baseline's final validation loss."""
    file, shared = RECIPE_FILES[workload], [*bench.base(workload), *off]
    bench.warm_up(file, shared)
    base = bench.recipe(file, shared, f"{workload}/baseline")
    rows_b = bench.run(workload, "baseline", base)
    target = report.last_eval(rows_b)
    name, overrides = technique
    steps = math.ceil(STEP_BUDGET * base.optim.max_steps)
    sets = [*bench.base(workload), *overrides(base), f"optim.max_steps={steps}"]
    sets.append(f"eval.stop_at_loss={target!r}")
    rows_t = bench.run(workload, name, bench.recipe(file, sets, f"{workload}/{name}"))
    best = report.best_eval(rows_b)[0]
    rows = [
        report.run_row("baseline", rows_b, target, best),
        report.run_row(name, rows_t, target, best),
    ]
    changes = " ".join(f"`{o}`" for o in [*overrides(base), f"optim.max_steps={steps}"])
    body = f"Sizes: {report.recipe_sizes(base)}.\n\n{name}: the same with {changes}.\n\n"
    body += report.comparison(rows, target, extra)
    data = {"target": target, "runs": rows}
    return _write_summary(bench, workload, title, body, data, ["baseline", name])


def _gpt_technique(s: Scale) -> Callable[[Recipe], list[str]]:
    """Seqlen warmup + random-LTD (LR by layer-tokens), sized from the baseline recipe."""

    def overrides(base: Recipe) -> list[str]:
        seq, layers, steps = (
            base.data.seq_len,
            int(base.model.config["n_layer"]),
            base.optim.max_steps,
        )
        return [
            "curriculum_learning.enabled=true",
            f"curriculum_learning.min_difficulty={s.curriculum_min}",
            f"curriculum_learning.max_difficulty={seq}",
            "curriculum_learning.schedule_config={total_curriculum_step: "
            f"{round(CURRICULUM_SHARE * steps)}, difficulty_step: 8}}",
            *_random_ltd(base, layers, s.ltd_min_gpt, seq, s.ltd_step),
        ]

    return overrides


def _vit_technique(s: Scale) -> Callable[[Recipe], list[str]]:
    """Random-LTD (LR by layer-tokens), sized from the baseline recipe."""

    def overrides(base: Recipe) -> list[str]:
        cfg = base.model.config
        tokens = (base.data.image_size // int(cfg["patch_size"])) ** 2 + 1  # patches + CLS
        return _random_ltd(base, int(cfg["num_hidden_layers"]), s.ltd_min_vit, tokens, 1)

    return overrides


def run_gpt(bench: Bench) -> str:
    """GPT-2 on tiny-shakespeare: baseline, then seqlen warmup + random-LTD to its final loss."""
    off = ["curriculum_learning.enabled=false", "data_efficiency.enabled=false"]
    technique = ("curriculum+random-ltd", _gpt_technique(bench.scale))
    title = "GPT-2, seqlen warmup + random-LTD"
    return _race(bench, "gpt", [*off, "optim.decay=cosine"], technique, title)


def run_vit(bench: Bench) -> str:
    """ViT on CIFAR-10: baseline, then random-LTD to its final validation loss."""
    technique = ("random-ltd", _vit_technique(bench.scale))
    title = "ViT on CIFAR-10, random-LTD"
    off = ["data_efficiency.enabled=false"]
    return _race(bench, "vit", off, technique, title, ["eval/accuracy"])


def run_bert(bench: Bench) -> str:
    """Pre-LN BERT MLM: baseline and PLD for the same steps; then GLUE from each."""
    file = RECIPE_FILES["bert"]
    off = [*bench.base("bert"), "progressive_layer_drop.enabled=false"]
    bench.warm_up(file, off)
    base = bench.recipe(file, off, "bert/baseline")
    pretrained = {"baseline": bench.run("bert", "baseline", base)}
    target = report.last_eval(pretrained["baseline"])
    pretrained["pld"] = bench.run("bert", "pld", bench.recipe(file, bench.base("bert"), "bert/pld"))
    best = report.best_eval(pretrained["baseline"])[0]
    rows = [report.run_row(k, v, target, best) for k, v in pretrained.items()]
    glue: dict[str, dict[str, dict[str, float]]] = {}
    for variant in pretrained:
        model = bench.work / "bert" / variant / "model"
        for task in GLUE:
            sets = [*bench.base("glue"), f"model.pretrained={model}"]
            name = f"glue-{task}-{variant}"
            recipe = bench.recipe(f"glue_{task}.yaml", sets, f"bert/{name}")
            metrics = bench.run("bert", name, recipe)
            glue.setdefault(variant, {})[task] = {
                k.removeprefix("eval/"): v for k, v in metrics[-1].items() if k.startswith("eval/")
            }
    body = "\n\n".join(
        [
            f"Pre-training sizes: {report.recipe_sizes(base)}.",
            report.comparison(rows, target, []),
            f"GLUE dev, fine-tuned from each model: {report.glue_sizes(recipe)}. Ours are tiny models pre-trained for minutes on 0.26M "
            "tokens; the published rows are BERT-base on Wikipedia + BookCorpus (Zhang & He "
            "2020, NeurIPS, GLUE dev table, as quoted in SPEC.md §1), for scale only.",
            harness.markdown_table(report.GLUE_HEADER, report.glue_cells(glue)),
        ]
    )
    return _write_summary(
        bench,
        "bert",
        "Pre-LN BERT MLM, PLD, then GLUE",
        body,
        {"target": target, "runs": rows, "glue": glue},
        list(pretrained),
    )


WORKLOADS: dict[str, Callable[[Bench], str]] = {"gpt": run_gpt, "bert": run_bert, "vit": run_vit}


# -- command line ----------------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _metadata(argv: Sequence[str], scale: str, data_root: Path, on_gpu: bool) -> dict[str, str]:
    import transformers

    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return {
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "scale": scale,
        "data root": str(data_root),
        "command": shlex.join([Path(sys.executable).name, "benchmarks/time_to_quality.py", *argv]),
    }


def _parse_sets(parser: argparse.ArgumentParser, items: Sequence[str]) -> dict[str, list[str]]:
    sets: dict[str, list[str]] = {}
    for item in items:
        workload, sep, override = item.partition(":")
        if not sep or workload not in ("gpt", "bert", "glue", "vit"):
            parser.error(f"--set {item}: expected WORKLOAD:KEY=VALUE, WORKLOAD gpt/bert/glue/vit")
        sets.setdefault(workload, []).append(override)
    return sets


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen workloads; print each one's summary, the tables last."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--workloads", default="gpt,bert,vit", help="comma list of gpt, bert, vit")
    add("--scale", choices=sorted(SCALES), default="gpu")
    add("--data-root", type=Path, help=f"default: ${DATA_ROOT_ENV}, else ../shared/data")
    add("--out", type=Path, help="results (default: benchmarks/results/<date>-<device>)")
    add("--work-dir", type=Path, help="checkpoints, models (default: a temporary folder)")
    add("--device", choices=["auto", "cuda", "cpu"], default="auto")
    add("--set", dest="sets", action="append", default=[], metavar="WORKLOAD:KEY=VALUE",
        help="override a recipe key in every run of gpt, bert, glue or vit")  # fmt: skip
    args = parser.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown or not workloads:
        parser.error(f"--workloads: unknown {unknown}; choose from {sorted(WORKLOADS)}")
    sets = _parse_sets(parser, args.sets)

    env_root = os.environ.get(DATA_ROOT_ENV)
    data_root = (args.data_root or Path(env_root or REPO.parent / "shared" / "data")).resolve()
    missing = [f for w in workloads for f in DATA_FILES[w] if not (data_root / f).is_file()]
    if missing:
        parser.error(f"data root {data_root} lacks {missing} (set --data-root or {DATA_ROOT_ENV})")
    os.environ[DATA_ROOT_ENV] = str(data_root)  # wins over every recipe's data.root

    on_gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    meta = _metadata(argv, args.scale, data_root, on_gpu)
    slug = re.sub(r"[^a-z0-9]+", "-", meta["device"].lower()).strip("-")
    suffix = "" if args.scale == "gpu" else f"-{args.scale}"
    out = args.out or REPO / "benchmarks" / "results" / f"{meta['date'][:10]}-{slug}{suffix}"
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="time-to-quality-"))
    bench = Bench(SCALES[args.scale], out, work, args.device, sets, meta)
    if bench.scale.threads is not None:
        torch.set_num_threads(bench.scale.threads)
    summaries = []
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # no load report or progress bar per model saved or loaded
    hf_logging.disable_progress_bar()
    try:
        for workload in workloads:
            summaries.append(WORKLOADS[workload](bench))
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nresults in {out}\n")
    print("\n\n".join(summaries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
