"""Every script in examples/ runs, on the toy model, a few steps (torchrun: 2 gloo processes)."""

from __future__ import annotations

import importlib
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

EXAMPLES = Path(__file__).parents[2] / "examples"
STEPS = 2


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Import an example as `python examples/<name>.py` would (its folder on sys.path)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def load(name: str) -> ModuleType:
        return importlib.import_module(name)

    return load


def _trained(handle: Any) -> None:
    """Every technique of ds_config.json ran `STEPS` optimizer steps."""
    assert handle.global_step == STEPS
    assert [t.name for t in handle.techniques] == ["random_ltd", "pld", "curriculum"]
    metrics = handle.metrics()
    assert metrics["pld/theta"] < 1.0 and metrics["tokens/consumed"] > 0


def test_every_example_is_tested() -> None:
    scripts = {p.stem for p in EXAMPLES.glob("*.py")} - {"toy"}
    assert scripts == {
        "plain_loop",
        "hf_trainer",
        "accelerate_loop",
        "lightning_module",
        "torchrun_ddp",
        "techniques_alone",
    }


def test_plain_loop(example: Any, tmp_path: Path) -> None:
    _trained(example("plain_loop").main(["--steps", str(STEPS), "--out", str(tmp_path)]))
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["leantrain"]["global_step"] == STEPS
    assert not any("random_ltd" in k or "pld" in k for k in saved["model"])  # plain keys


def test_hf_trainer(example: Any, tmp_path: Path) -> None:
    with warnings.catch_warnings():  # the Trainer pins memory by default; CPUs have none to pin
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        handle = example("hf_trainer").main(["--steps", str(STEPS), "--out", str(tmp_path)])
    _trained(handle)
    assert (tmp_path / f"checkpoint-{STEPS}" / "leantrain_state.pt").is_file()


def test_accelerate_loop(example: Any) -> None:
    pytest.importorskip("accelerate")
    _trained(example("accelerate_loop").main(["--steps", str(STEPS)]))


def test_lightning_module(example: Any, tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings():  # Lightning's advice (workers, log intervals) is not tested
        warnings.filterwarnings("ignore", module="lightning")
        warnings.filterwarnings("ignore", module="pytorch_lightning")
        module = example("lightning_module").main(["--steps", str(STEPS), "--out", str(tmp_path)])
    _trained(module.handle)


def test_techniques_alone(example: Any) -> None:
    """The random-LTD part reads a real DeepSpeedExamples config (global batch from its
    train_batch_size) and drops half the tokens of 10 of the 12 blocks."""
    ltd = example("techniques_alone").main(["--steps", str(STEPS)])
    assert ltd.global_batch_size == 4
    assert ltd.metrics()["random_ltd/consumed_layer_tokens"] == STEPS * 4 * (128 * 10 + 1024 * 2)


@pytest.mark.distributed
def test_torchrun_ddp() -> None:
    """`torchrun --standalone --nproc_per_node 2 examples/torchrun_ddp.py`, on gloo."""
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", str(EXAMPLES / "torchrun_ddp.py"), "--steps", str(STEPS)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # the two ranks share stdout, so their lines may interleave: find each rank's report
    reports = re.findall(r"rank (\d/2) (\d+) \{", done.stdout)
    assert sorted(reports) == [("0/2", str(STEPS)), ("1/2", str(STEPS))], done.stdout
