"""The surgery grid: every invariant of `invariants.py` on every (model, technique) row of
`settings.py`, and every combination the registry refuses refused with its reason."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import invariants as inv
import pytest
import torch
from settings import (
    AUTO_CLASS,
    CASES,
    TECHNIQUES,
    ModelCase,
    TechniqueCase,
    build,
    fresh,
    make_inputs,
    outputs,
)
from torch import nn

from leantrain.surgery import SurgeryError

pytestmark = pytest.mark.usefixtures("one_thread")

_TEXT = ("causal_lm", "masked_lm", "seq2seq")

#: check name -> (check, which model rows it applies to)
CHECKS: dict[str, tuple[Callable[..., None], Callable[[ModelCase], bool]]] = {
    "keys_and_revert": (inv.check_keys_and_revert, lambda c: True),
    "eval_bit_equal": (inv.check_eval_bit_equal, lambda c: True),
    "neutral_training_bit_equal": (inv.check_neutral_training_bit_equal, lambda c: True),
    "no_future_leak": (inv.check_no_future_leak, lambda c: c.causal),
    "padding_invariance": (inv.check_padding_invariance, lambda c: c.task in _TEXT),
    "block": (inv.check_block, lambda c: True),
    "gradients": (inv.check_gradients, lambda c: True),
    "loss_decreases": (inv.check_loss_decreases, lambda c: True),
    "save_pretrained": (inv.check_save_pretrained, lambda c: c.model_type is not None),
    "compile_step": (inv.check_compile_step, lambda c: True),
}


def _grid() -> Iterator[Any]:
    for case in CASES:
        for tech in TECHNIQUES:
            if tech.why_not(case) is not None or tech.name not in (case.techniques or (tech.name,)):
                continue
            for name, (_, applies) in CHECKS.items():
                if applies(case):
                    yield pytest.param(case, tech, name, id=f"{name}-{tech.name}-{case.id}")


_BUILT: dict[str, nn.Module] = {}


def _plain(case: ModelCase) -> nn.Module:
    """The plain model of a row, built once per test session (checks copy it)."""
    if case.id not in _BUILT:
        _BUILT[case.id] = build(case)
    return _BUILT[case.id]


# Dynamo reads `.grad` of non-leaf hidden states when it wraps them (torch 2.13).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.parametrize(("case", "tech", "check"), list(_grid()))
def test_grid(case: ModelCase, tech: TechniqueCase, check: str, tmp_path: Path) -> None:
    fn, _ = CHECKS[check]
    extra = (tmp_path,) if check == "save_pretrained" else ()
    fn(case, tech, _plain(case), *extra)


@pytest.mark.parametrize(
    ("case", "tech"),
    [
        pytest.param(c, t, id=f"{t.name}-{c.id}")
        for c in CASES
        for t in TECHNIQUES
        if t.why_not(c) is not None
    ],
)
def test_refused_with_the_reason(case: ModelCase, tech: TechniqueCase) -> None:
    why = tech.why_not(case)
    assert why is not None
    with pytest.raises(SurgeryError) as info:
        tech.convert(fresh(_plain(case)), case, True)
    assert why in str(info.value) and str(case.model_type) in str(info.value)


_LOAD_WITHOUT_LEANTRAIN = """
import sys, torch, transformers
torch.set_num_threads(1)  # as the parent: same kernels, same bits
for folder, auto in [line.split() for line in sys.stdin.read().splitlines()]:
    model = getattr(transformers, auto).from_pretrained(folder).eval()
    saved = torch.load(folder + "/expected.pt")
    with torch.no_grad():
        logits = model(**saved["inputs"]).logits
    assert torch.equal(logits, saved["logits"]), folder
assert not any(name.startswith("leantrain") for name in sys.modules)
print("loaded", len(sys.modules))
"""


def test_saved_models_load_with_plain_transformers(tmp_path: Path) -> None:
    """Checkpoints of converted models (every technique at once) load in a process that never
    imports leantrain, and give the converted model's eval outputs."""
    jobs = []
    for case in CASES:
        if case.model_type is None or case.techniques is not None:
            continue
        model = fresh(_plain(case))
        for tech in TECHNIQUES:
            if tech.why_not(case) is None:
                tech.convert(model, case, True)
        folder = tmp_path / case.id
        model.save_pretrained(folder)
        inputs = make_inputs(case)
        with torch.no_grad():
            logits = outputs(case, model.eval()(**inputs))[0]
        torch.save({"inputs": inputs, "logits": logits}, folder / "expected.pt")
        jobs.append(f"{folder} {AUTO_CLASS[case.task]}")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_LEANTRAIN],
        input="\n".join(jobs),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("loaded")


# The grid compiles with dynamo's "eager" backend: it captures every block's graphs, guards and
# graph breaks (where surgery can go wrong) at a third of AOTAutograd's cost on CPU. These rows
# add AOTAutograd (functionalised forward and backward) and inductor's code generation (about a
# minute on 2 cores with a cold cache, so one row; PLD's is in test_pld_surgery.py).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.parametrize(
    ("case_id", "tech_name", "backend"),
    [
        ("llama", "random_ltd", "inductor"),
        ("t5", "pld", "aot_eager"),
        ("t5-decoder", "random_ltd", "aot_eager"),
        ("albert", "random_ltd", "aot_eager"),
    ],
)
def test_compile_representatives(case_id: str, tech_name: str, backend: str) -> None:
    case = next(c for c in CASES if c.id == case_id)
    tech = next(t for t in TECHNIQUES if t.name == tech_name)
    inv.check_compile_step(case, tech, _plain(case), backend=backend)
