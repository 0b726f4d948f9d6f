"""Stage what a GPU run needs but the GPU machine lacks: data under `.carry/data`, wheels in `.whl`.

The lent GPU machine has no network and does not see `../shared`; what it reads must travel
with the working tree (64 MiB in all, see benchmarks/README.md). This copies the real data the
GPU benchmarks read, keeping `../shared/data`'s relative layout so recipes run unchanged with
`LEANTRAIN_DATA_ROOT=.carry/data`, cuts CIFAR-10 to an evenly spread per-class subset in the
same zip layout, and downloads the Python 3.12 wheels the machine's image lacks.

    python benchmarks/gpu_carry.py              # then: run(..., carry=[".carry", ".whl"])
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import time_to_quality

__all__ = [
    "CARRY_LIMIT",
    "DATA_FILES",
    "NOTES",
    "WHEELS",
    "cifar_subset",
    "copy_data",
    "download_wheels",
    "main",
]

REPO = Path(__file__).resolve().parents[1]
CARRY_LIMIT = 64 * 2**20
"""What may travel to the GPU machine in all: tracked files plus carried folders."""

CIFAR = time_to_quality.CIFAR_ZIP
DATA_FILES = sorted(
    {rel for files in time_to_quality.DATA_FILES.values() for rel in files if rel != CIFAR}
)
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


def cifar_subset(src: Path, dest: Path, train_per_class: int, test_per_class: int) -> int:
    """Write the first images of each class (same `cifar10/<split>/<class>/` layout); count."""
    limits = {"train": train_per_class, "test": test_per_class}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    count = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zout:
        for name in sorted(zin.namelist()):
            parts = name.split("/")  # cifar10/<split>/<class>/NNNN.jpg
            if len(parts) == 4 and parts[3] and int(parts[3].split(".")[0]) < limits[parts[1]]:
                zout.writestr(name, zin.read(name))
                count += 1
    tmp.replace(dest)
    shutil.copy2(src.parent / "PROVENANCE.md", dest.parent / "PROVENANCE.md")
    note = dest.parent / "SUBSET.md"
    note.write_text(
        f"A subset of `{CIFAR}` from ../shared/data (see PROVENANCE.md beside this): images "
        f"0..{train_per_class - 1} of each class of train and 0..{test_per_class - 1} of test, "
        f"{count} images, same zip layout. Made by benchmarks/gpu_carry.py for a GPU run.\n"
    )
    return count


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
    parser.add_argument("--cifar-train-per-class", type=int, default=2000)
    parser.add_argument("--cifar-test-per-class", type=int, default=500)
    parser.add_argument("--no-wheels", action="store_true", help="stage the data only")
    args = parser.parse_args(argv)
    data, wheels = REPO / ".carry" / "data", REPO / ".whl"
    copy_data(args.data_root, data)
    n = cifar_subset(
        args.data_root / CIFAR, data / CIFAR, args.cifar_train_per_class, args.cifar_test_per_class
    )
    if not args.no_wheels:
        wheels.mkdir(exist_ok=True)
        download_wheels(wheels)
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    repo_bytes = sum((REPO / f.decode()).stat().st_size for f in tracked if f)
    total = repo_bytes + _size(data) + (_size(wheels) if wheels.is_dir() else 0)
    print(f"CIFAR subset: {n} images")
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
