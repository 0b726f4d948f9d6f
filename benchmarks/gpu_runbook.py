"""The GPU runbook: every GPU check and timing in one command that fits a short GPU slot.

Stages run one at a time in priority order against a deadline. A stage starts only if its
time estimate fits the time left, runs in its own process group, and is killed at the deadline;
after each stage the summary (`summary.md`, `summary.json`: done / failed / timed out / skipped
and why, with seconds) and `results.tgz` (every small file the finished stages wrote: logs,
JSON rows, compare tables and plots; no checkpoints) are rewritten in the output folder, temp +
rename, so whatever finished is there however the command ends. Stages write plain files under
the work folder (`<work>/<stage>.log`, `<work>/<stage>/`).

    python benchmarks/gpu_runbook.py --plan gpt --out runs/gpu-session --deadline-s 520
    python benchmarks/gpu_runbook.py --plan gpt --only gpt-frontier    # one stage again

`benchmarks/gpu_session.sh` is the one command: it installs carried wheels (if any), then runs
this with what is left of its 9 minutes. Exit status: 0 every stage done, 1 a stage failed or
timed out, 3 a stage was skipped (none failed), 2 bad arguments. The estimates are guesses for
one H200 (GPT-2-small bf16 at ~200k tokens/s, a few tens of seconds per torch.compile); the
summary records each stage's real seconds for resizing them.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

__all__ = ["DATA_FILES", "PLANS", "Stage", "StageResult", "exit_code", "main", "run_plan"]

REPO = Path(__file__).resolve().parents[1]
#: Files the plans read under the data root (LEANTRAIN_DATA_ROOT); the GPT corpus itself is the
#: interpreter's own Python source. bert_pld.DATA_FILES lists the BERT plan's.
DATA_FILES = ["tokenizers/gpt2/vocab.json", "tokenizers/gpt2/merges.txt"]
#: Files larger than this stay out of results.tgz (checkpoints, models, token caches).
ARCHIVE_MAX_BYTES = 4 * 2**20
#: Seconds kept back from the deadline for the last summary and archive.
RESERVE_S = 5.0


@dataclass(frozen=True)
class Stage:
    """One step of a plan: a bash command line run from the repository root with `env` added;
    "{py}" in it is the interpreter and "{dir}" the stage's own folder."""

    name: str
    estimate_s: float
    command: str
    what: str
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class StageResult:
    """How a stage ended: done, failed (exit N), timed out, skipped or interrupted."""

    name: str
    status: str
    seconds: float
    estimate_s: float
    note: str = ""


def _bench(script: str, shape: str, name: str, est: float, kernels: str | None = None) -> Stage:
    """A layerdrop / tokendrop timing stage; `name` says eager or compiled."""
    compiled = name.split("-")[1] == "compiled"
    command = f"{{py}} benchmarks/{script}.py --device cuda --dtype bf16 --shapes {shape} "
    command += "--repeats 3 --json {dir}/rows.json" + (" --compile-blocks" if compiled else "")
    env = {"LEANTRAIN_RANDOM_LTD_KERNELS": kernels} if kernels else {}
    what = f"{script}.py {shape} bf16, {'per-block compiled' if compiled else 'eager'}"
    return Stage(name, est, command, what + (f", {kernels} kernels" if kernels else ""), env)


_ENV = Stage(
    "env",
    15,
    "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; "
    "{py} -c \"import torch, transformers, triton, pydantic; print('torch', torch.__version__, "
    "'transformers', transformers.__version__, 'triton', triton.__version__, 'pydantic', "
    'pydantic.__version__, torch.cuda.get_device_name())"; git rev-parse HEAD',
    "GPU, driver and package versions",
)
GPT_FRONTIER = (
    "{py} -m leantrain compare recipes/gpt2_python_source.yaml --arms baseline,cl+ltd,leantrain "
    "--budgets 200,400 --arm-budgets baseline=100,200,400 "
    "--set data.folders.max_tokens=7000000 --device cuda --precision bf16 --output-dir {dir}"
)

PLANS: dict[str, list[Stage]] = {
    "gpt": [
        _ENV,
        Stage(
            "cuda-tests",
            50,
            "{py} -m pytest -q -p no:cacheprovider -rs -m gpu tests/gpu "
            "tests/unit/test_random_ltd_kernels.py",
            "the CUDA-only tests (no host syncs, bf16 equality, Triton kernels)",
        ),
        _bench("layerdrop", "gpt2-small", "layerdrop-eager", 30),
        _bench("layerdrop", "gpt2-small", "layerdrop-compiled", 60),
        _bench("tokendrop", "gpt2-1024", "tokendrop-eager-torch", 30, "torch"),
        _bench("tokendrop", "gpt2-1024", "tokendrop-eager-triton", 35, "triton"),
        _bench("tokendrop", "gpt2-1024", "tokendrop-compiled-torch", 60, "torch"),
        _bench("tokendrop", "gpt2-1024", "tokendrop-compiled-triton", 65, "triton"),
        Stage(
            "vs-deepspeed",
            120,
            "{py} benchmarks/vs_deepspeed.py --device cuda --dtype bf16 --shapes gpt2-1024 "
            "--repeats 2 --json {dir}/rows.json",
            "ours and DeepSpeed 0.19.7's PLD and random-LTD, GPT-2-small seq 1024 "
            "(DeepSpeed's random-LTD op JIT-builds first)",
        ),
        Stage(
            "gpt-frontier",
            150,
            GPT_FRONTIER,
            "GPT-2-small on the Python source at equal quality: baseline 100/200/400 steps, "
            "cl+ltd and all three 200/400",
        ),
    ],
    "bert": [
        _ENV,
        Stage(
            "bert-pld",
            420,
            "{py} benchmarks/bert_pld.py --scale gpu --output-dir {dir}",
            "Pre-LN BERT MLM: baseline, pld, pld+ltd at equal quality, then SST-2/MRPC/RTE",
        ),
    ],
}


def exit_code(results: Sequence[StageResult]) -> int:
    """0: every stage done; 1: one failed, timed out or was interrupted; 3: one was skipped."""
    if any(r.status not in ("done", "skipped") for r in results):
        return 1
    return 3 if any(r.status == "skipped" for r in results) else 0


class _Interrupted(Exception):
    """SIGTERM or SIGINT reached the runbook."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted(signal.Signals(signum).name)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the stage's process group, then SIGKILL what is left after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def _run_stage(stage: Stage, work: Path, python: str, timeout: float) -> tuple[str, str]:
    """Run one stage to its end or `timeout`; (status, note)."""
    folder = work / stage.name
    folder.mkdir(parents=True, exist_ok=True)
    command = stage.command.replace("{py}", shlex.quote(python))
    command = command.replace("{dir}", shlex.quote(str(folder)))
    env = {**os.environ, **stage.env}
    with open(work / f"{stage.name}.log", "wb") as log:
        log.write(f"$ {command}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return "timed out", f"killed at the deadline after {timeout:.0f} s"
        except BaseException:
            _kill_group(proc)
            raise
    return ("done", "") if rc == 0 else (f"failed (exit {rc})", f"see {stage.name}.log")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _archive(work: Path, out: Path) -> None:
    """results.tgz: every file under `work` up to ARCHIVE_MAX_BYTES, paths relative to it."""
    own = {out / name for name in ("results.tgz", "summary.md", "summary.json")}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(work.rglob("*")):
            small = path.is_file() and path.stat().st_size <= ARCHIVE_MAX_BYTES
            if small and not path.name.startswith(".") and path not in own:
                tar.add(path, arcname=str(path.relative_to(work)))
    _write_atomic(out / "results.tgz", buf.getvalue())


def _summary(out: Path, results: Sequence[StageResult], meta: Mapping[str, object]) -> None:
    rows = [
        f"| {r.name} | {r.status} | {r.seconds:.0f} | {r.estimate_s:.0f} | {r.note} |"
        for r in results
    ]
    md = (
        f"# GPU runbook: plan {meta['plan']}\n\n{meta['date']} · commit {meta['commit']} · "
        f"deadline {meta['deadline_s']:.0f} s · exit {exit_code(results)}\n\n"
        "| stage | status | seconds | estimate | note |\n| --- | --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + "\n"
    )
    _write_atomic(out / "summary.md", md.encode())
    payload = {**meta, "exit": exit_code(results), "stages": [asdict(r) for r in results]}
    _write_atomic(out / "summary.json", (json.dumps(payload, indent=1) + "\n").encode())


def run_plan(
    stages: Sequence[Stage],
    *,
    out: Path,
    work: Path,
    deadline_s: float,
    python: str = sys.executable,
    meta: Mapping[str, object] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[StageResult]:
    """Run `stages` in order within `deadline_s` seconds from now; write the summary and the
    archive after each. Every stage appears in the summary, with what happened to it."""
    out, work = out.resolve(), work.resolve()  # stages run from the repository root
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    start = clock()
    meta = {"deadline_s": deadline_s, "plan": "?", "commit": "?", "date": "", **(meta or {})}
    results = [StageResult(s.name, "not started", 0.0, s.estimate_s) for s in stages]
    i, began = 0, start
    try:
        _summary(out, results, meta)
        for i, stage in enumerate(stages):
            left = deadline_s - (clock() - start) - RESERVE_S
            if stage.estimate_s > left:
                note = f"estimate {stage.estimate_s:.0f} s > {max(left, 0):.0f} s left"
                results[i] = StageResult(stage.name, "skipped", 0.0, stage.estimate_s, note)
                _summary(out, results, meta)
                continue
            began = clock()
            status, note = _run_stage(stage, work, python, left)
            results[i] = StageResult(stage.name, status, clock() - began, stage.estimate_s, note)
            _archive(work, out)
            _summary(out, results, meta)
    except _Interrupted as stop:  # the stage's processes are gone: keep what it wrote
        if results[i].status == "not started":
            results[i] = StageResult(
                stages[i].name,
                "interrupted",
                clock() - began,
                stages[i].estimate_s,
                f"{stop} reached the runbook",
            )
        _archive(work, out)
        _summary(out, results, meta)
    return results


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    """Run a plan from the command line; returns the exit status."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--plan", choices=sorted(PLANS), default="gpt")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-session"))
    parser.add_argument("--work", type=Path, help="where stages write (default: --out)")
    parser.add_argument("--deadline-s", type=float, default=540.0, help="seconds from now")
    parser.add_argument("--only", help="comma list of the plan's stages to run (in plan order)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the stages")
    args = parser.parse_args(argv)
    stages = PLANS[args.plan]
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {s.name for s in stages})
        if unknown:
            parser.error(f"--only: {unknown} not in plan {args.plan}: {[s.name for s in stages]}")
        stages = [s for s in stages if s.name in names]
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = {"plan": args.plan, "commit": _commit(), "date": date, "argv": sys.argv}
    results = run_plan(
        stages,
        out=args.out,
        work=args.work or args.out,
        deadline_s=args.deadline_s,
        python=args.python,
        meta=meta,
    )
    for r in results:
        print(f"{r.name:>28}: {r.status} ({r.seconds:.0f} s of est. {r.estimate_s:.0f}) {r.note}")
    return exit_code(results)


if __name__ == "__main__":
    raise SystemExit(main())
