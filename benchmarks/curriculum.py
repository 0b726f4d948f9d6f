"""Curriculum benchmark: analyzer throughput at 10^7 samples, sampler time per batch at 10^8.

    .venv/bin/python benchmarks/curriculum.py                      # full sizes, a few minutes
    .venv/bin/python benchmarks/curriculum.py --analyzer-samples 1e6 --sampler-samples 1e7

Analyzer: a synthetic corpus (lognormal lengths 1..512, mean ~48 tokens; Zipf-like token ids
over a 30,522 vocabulary; uint16 memmap + int64 offsets) analysed in a fresh subprocess with
`num_workers` processes, for `seqlen` (trivial, from the offsets) and `vocab_rarity` (two passes
over every token). Sampler: a fake 10^8-sample seqlen index (values 1..2048) written with
`write_index`, then `CurriculumSampler` with fixed_linear value difficulty rising from 64 to
2048 (a new cluster every few steps), micro-batch 512. DeepSpeed's numbers are BENCHMARKS.md's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VOCAB = 30522
CHUNK = 1_000_000


def make_corpus(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """Write tokens.npy (uint16) and offsets.npy (int64) for n samples, chunk by chunk."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(3.6, 0.6, n), 1, 512).astype(np.int64)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.save(folder / "offsets.npy", offsets)
    tokens = np.lib.format.open_memmap(folder / "tokens.npy", "w+", np.uint16, (int(offsets[-1]),))
    for a in range(0, n, CHUNK):
        lo, hi = int(offsets[a]), int(offsets[min(n, a + CHUNK)])
        u = rng.random(hi - lo, dtype=np.float32)
        tokens[lo:hi] = (u * u * u * (VOCAB - 1)).astype(np.uint16)  # heavy head, long tail
    tokens.flush()
    return folder / "tokens.npy", folder / "offsets.npy"


def analyze_child(args: argparse.Namespace) -> None:
    """Run in a fresh process: analyse the corpus, print one JSON line of measurements."""
    from leantrain.curriculum import ArraySource, DataAnalyzer

    folder = Path(args.folder)
    source = ArraySource(folder / "tokens.npy", folder / "offsets.npy")
    out = folder / f"index-{args.metric}"
    t0 = time.perf_counter()
    analyzer = DataAnalyzer(
        source, out, [args.metric], num_workers=args.workers, batch_size=65536,
        show_progress=False, vocab_size=VOCAB,
    )  # fmt: skip
    analyzer.run()
    wall = time.perf_counter() - t0
    disk = sum(p.stat().st_size for p in (out / args.metric).glob("*.npy"))
    print(json.dumps({
        "metric": args.metric, "wall_s": wall, "samples": len(source),
        "timings": analyzer.timings,
        "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "bytes_per_sample": disk / len(source),
    }))  # fmt: skip


def bench_analyzer(args: argparse.Namespace, folder: Path) -> list[dict]:
    # every phase in its own process: ru_maxrss after exec still counts the parent's memory
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--child", "--folder", str(folder), "--metric", "corpus",
           "--analyzer-samples", str(args.analyzer_samples)]  # fmt: skip
    subprocess.run(cmd, check=True)
    print(f"corpus: {args.analyzer_samples:.3g} samples in {time.perf_counter() - t0:.1f} s")
    rows = []
    for metric in ("seqlen", "vocab_rarity"):
        cmd = [sys.executable, __file__, "--child", "--folder", str(folder), "--metric", metric,
               "--workers", str(args.workers)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1])
    return rows


def bench_sampler(args: argparse.Namespace, folder: Path) -> dict:
    from leantrain.curriculum import CurriculumSampler, write_index

    n = args.sampler_samples
    rng = np.random.default_rng(1)
    values = np.lib.format.open_memmap(folder / "fake_values.npy", "w+", np.int16, (n,))
    for a in range(0, n, 4 * CHUNK):
        b = min(n, a + 4 * CHUNK)
        values[a:b] = np.clip(rng.lognormal(5.5, 0.8, b - a), 1, 2048).astype(np.int16)
    values.flush()
    t0 = time.perf_counter()
    write_index(folder, "seqlen", values)
    build_s = time.perf_counter() - t0
    metric = {
        "index_to_sample_path": str(folder / "seqlen"),
        "difficulty_type": "value",
        "clustering_type": "schedule_based",
        "min_difficulty": 64,
        "max_difficulty": 2048,
        "schedule_type": "fixed_linear",
        "schedule_config": {"total_curriculum_step": args.steps, "difficulty_step": 8},
    }
    cfg = {"data_efficiency": {"enabled": True, "data_sampling": {"enabled": True,
           "curriculum_learning": {"enabled": True, "curriculum_metrics": {"seqlen": metric}}}}}  # fmt: skip
    t0 = time.perf_counter()
    sampler = CurriculumSampler(cfg, micro_batch_size=512, rank=0, world_size=1)
    setup_s = time.perf_counter() - t0
    it = iter(sampler)
    times = []
    for _ in range(args.steps + 200):  # through the whole ramp, then past max
        t = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t)
    ms = np.asarray(times) * 1e3
    clusters = len(sampler._state.size)
    return {
        "samples": n, "build_s": build_s, "setup_s": setup_s, "steps": len(ms),
        "clusters": clusters, "p50": float(np.median(ms)), "mean": float(ms.mean()),
        "p99": float(np.percentile(ms, 99)), "max": float(ms.max()),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--analyzer-samples", type=float, default=1e7)
    p.add_argument("--sampler-samples", type=float, default=1e8)
    p.add_argument("--steps", type=int, default=2000, help="sampler steps of the ramp")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-analyzer", action="store_true")
    p.add_argument("--skip-sampler", action="store_true")
    p.add_argument("--tmp", default=None, help="folder for the corpus and index (default: temp)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--metric", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child and args.metric == "corpus":
        make_corpus(Path(args.folder), int(args.analyzer_samples))
        return
    if args.child:
        analyze_child(args)
        return
    args.analyzer_samples, args.sampler_samples = (
        int(args.analyzer_samples),
        int(args.sampler_samples),
    )
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        analyzer = [] if args.skip_analyzer else bench_analyzer(args, Path(tmp))
        for f in Path(tmp).glob("*.npy"):
            f.unlink()
        sampler = None if args.skip_sampler else bench_sampler(args, Path(tmp))
    print("\n| what | leantrain | DeepSpeed 0.19.8 (BENCHMARKS.md) |\n| --- | --- | --- |")
    for row in analyzer:
        rate = row["samples"] / row["wall_s"]
        print(
            f"| analyzer `{row['metric']}`, {row['samples']:.3g} samples, {args.workers} workers "
            f"| {rate / 1e3:,.0f}K samples/s end to end ({rate / args.workers / 1e3:,.0f}K per "
            f"worker), {row['bytes_per_sample']:.0f} B/sample on disk, peak RSS "
            f"{row['rss_main_mb']:.0f} MB main / {row['rss_worker_mb']:.0f} MB worker "
            f"| 71K samples/s (trivial metric, 2 threads, 10M), 68 B/sample, 2.0 GB peak RSS |"
        )
    if sampler:
        print(
            f"| sampler, {sampler['samples']:.3g} samples, micro-batch 512, value difficulty "
            f"64→2048 over {args.steps} steps ({sampler['clusters']} clusters) "
            f"| p50 {sampler['p50']:.2f} ms, mean {sampler['mean']:.2f} ms, p99 "
            f"{sampler['p99']:.2f} ms, max {sampler['max']:.2f} ms; setup {sampler['setup_s']:.1f} s "
            f"(index load + checksums), index build {sampler['build_s']:.0f} s "
            f"| p50 0.75 ms, mean 14–16 ms, spikes to 311 ms (2–10M samples) |"
        )


if __name__ == "__main__":
    main()
