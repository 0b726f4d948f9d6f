"""Stage what the GPU runbook needs on a GPU machine without network: data and wheels.

The GPT corpus is the machine's own Python source and needs nothing; the GPT-2 tokenizer
files, the BERT workload's data and the Python packages a bare CUDA image may lack do. This
copies the data files the runbook reads (gpu_runbook.DATA_FILES, bert_pld.DATA_FILES) into
`.carry/data`, keeping the data root's layout so `benchmarks/gpu_session.sh` finds them
there, downloads the Python 3.12 x86-64 wheels into `.whl`, builds a DeepSpeed wheel with no
ops (its random-LTD op JIT-builds there), and checks that the repository and both folders
fit in 64 MiB.

    python benchmarks/gpu_carry.py              # then copy the clone with .carry/ and .whl/
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import bert_pld
import gpu_runbook

__all__ = ["CARRY_LIMIT", "DATA_FILES", "NOTES", "WHEELS", "copy_data", "download_wheels", "main"]

REPO = Path(__file__).resolve().parents[1]
CARRY_LIMIT = 64 * 2**20
"""What may travel in all: tracked files plus the two folders."""

DATA_FILES = sorted({*gpu_runbook.DATA_FILES, *bert_pld.DATA_FILES})
"""Files copied as they are, relative to the data root (with their folder's notes, below)."""
NOTES = ("PROVENANCE.md", "LICENSE*", "readme.txt")
"""Files beside the data that travel with it: MRPC is non-commercial, its licence goes along."""


WHEELS = [
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types==0.7.0",
    "typing-inspection==0.4.5",
    "typing-extensions==4.16.0",  # pydantic 2.14 needs >= 4.16; the image's may be older
    "hjson==3.1.0",
]
"""Wheels the GPU image lacks (leantrain's config layer; DeepSpeed's config parser)."""

DEEPSPEED = "deepspeed==0.19.7"
"""The last DeepSpeed release with PLD; built here as a pure-Python wheel (ops JIT-built there)."""


def copy_data(root: Path, dest: Path) -> None:
    """Copy `DATA_FILES` and the notes beside them from `root` to `dest`, keeping their paths."""
    for rel in DATA_FILES:
        src = root / rel
        if not src.is_file():
            raise SystemExit(f"{src}: missing; expected the shared data folder at {root}")
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
        for pattern in NOTES:
            for note in src.parent.glob(pattern):
                shutil.copy2(note, dest / rel.rsplit("/", 1)[0] / note.name)


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def download_wheels(dest: Path) -> None:
    """Python 3.12 manylinux x86-64 wheels of `WHEELS`, and a DeepSpeed wheel with no ops."""
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35, 39)] + [
        "--platform=manylinux2014_x86_64"
    ]
    _pip(
        "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version=3.12",
        "--implementation=cp", *platforms, f"--dest={dest}", *WHEELS,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DS_BUILD_OPS": "0"}
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "--no-build-isolation", f"--wheel-dir={tmp}", DEEPSPEED],
            check=True, env=env,
        )  # fmt: skip
        for wheel in Path(tmp).glob("deepspeed-*.whl"):
            shutil.copy2(wheel, dest / wheel.name)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> None:
    """Stage data and wheels, then print what travels and whether it fits."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--no-wheels", action="store_true", help="stage the data only")
    args = parser.parse_args(argv)
    data, wheels = REPO / ".carry" / "data", REPO / ".whl"
    copy_data(args.data_root, data)
    if not args.no_wheels:
        wheels.mkdir(exist_ok=True)
        download_wheels(wheels)
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    repo_bytes = sum((REPO / f.decode()).stat().st_size for f in tracked if f)
    total = repo_bytes + _size(data) + (_size(wheels) if wheels.is_dir() else 0)
    for name, size in (("tracked files", repo_bytes), (".carry/data", _size(data))):
        print(f"{name:>14}: {size / 2**20:6.1f} MiB")
    if wheels.is_dir():
        print(f"{'.whl':>14}: {_size(wheels) / 2**20:6.1f} MiB  {sorted(os.listdir(wheels))}")
    verdict = "fits" if total <= CARRY_LIMIT else "TOO LARGE"
    print(f"{'total':>14}: {total / 2**20:6.1f} MiB of {CARRY_LIMIT / 2**20:.0f} ({verdict})")
    if total > CARRY_LIMIT:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
