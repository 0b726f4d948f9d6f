"""What a run folder records about its run, so that `leantrain report` can tell whether two runs
differ in more than their techniques: the resolved recipe and where the run ran (`run.json`,
rewritten at each start, resumes included)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from leantrain.files import HOST, atomic_write_json
from leantrain.trainer.checkpoint import latest_checkpoint

__all__ = [
    "RUN_INFO",
    "WHERE_KEYS",
    "dotted_keys",
    "read_run_info",
    "setup_differences",
    "write_run_info",
]

#: The file in a run folder.
RUN_INFO = "run.json"
#: Keys of `run.json` that say where the run ran (beside "recipe").
WHERE_KEYS = ("host", "device", "world_size", "torch")


def _device_name(device: torch.device) -> str:
    """ "cpu", or the accelerator's kind and model ("cuda NVIDIA H200")."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return device.type


def write_run_info(out: Path, recipe: Mapping[str, Any], device: torch.device, world: int) -> None:
    """Record the resolved recipe (`Recipe.to_dict()`) and where this run runs in
    `<out>/run.json`."""
    info = {
        "recipe": dict(recipe),
        "host": HOST,
        "device": _device_name(device),
        "world_size": world,
        "torch": torch.__version__,
    }
    atomic_write_json(out / RUN_INFO, info)


def read_run_info(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's `run.json`; for runs written before it existed, the recipe of its newest
    checkpoint (`{"recipe": ...}`, nothing on where it ran); None when neither is there."""
    folder = Path(run_dir)
    if (folder / RUN_INFO).is_file():
        info: dict[str, Any] = json.loads((folder / RUN_INFO).read_text(encoding="utf-8"))
        return info
    ckpt = latest_checkpoint(folder)
    if ckpt is not None and (ckpt / "config.json").is_file():
        return {"recipe": json.loads((ckpt / "config.json").read_text(encoding="utf-8"))}
    return None


#: Recipe keys that change where a run writes or how often it reports, not what it trains.
_BOOKKEEPING = frozenset(
    {"output_dir", "checkpoint_interval", "log_interval", "num_workers", "device", "eval.interval"}
)


def dotted_keys(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys (`optim.lr`); lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(dotted_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def setup_differences(
    base: dict[str, Any], other: dict[str, Any], technique_keys: tuple[str, ...]
) -> list[str]:
    """How run `other` was set up differently from `base` (two `read_run_info` records),
    besides its techniques (the top-level `technique_keys`) and bookkeeping: one "key (base
    value vs other value)" per recipe key, then one per differing `WHERE_KEYS` entry."""

    def trainer_part(info: dict[str, Any]) -> dict[str, Any]:
        recipe = {k: v for k, v in info["recipe"].items() if k not in technique_keys}
        return {k: v for k, v in dotted_keys(recipe).items() if k not in _BOOKKEEPING}

    a, b = trainer_part(base), trainer_part(other)
    missing = "(unset)"
    found = [
        f"{key} ({a.get(key, missing)} vs {b.get(key, missing)})"
        for key in sorted(a.keys() | b.keys())
        if a.get(key, missing) != b.get(key, missing)
    ]
    found += [
        f"{key} ({base[key]} vs {other[key]})"
        for key in WHERE_KEYS
        if key in base and key in other and base[key] != other[key]
    ]
    return found
