"""`benchmarks/bert_pld.py --scale smoke` on the real data: the reduced vocabulary, the three
pre-training arms with their equal-cost runs, and GLUE fine-tuning from each."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from leantrain.trainer.recipe import DATA_ROOT_ENV


@pytest.mark.slow
@pytest.mark.shared_data
def test_smoke_scale_pretrains_every_arm_and_fine_tunes_at_equal_cost(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    load_script: Callable[[str], ModuleType],
) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(shared_data))
    script = load_script("bert_pld")
    threads = torch.get_num_threads()
    try:
        argv = ["--scale", "smoke", "--output-dir", str(tmp_path), "--data-root", str(shared_data)]
        argv += ["--glue-arms", "baseline,pld,pld+ltd"]
        assert script.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    vocab = (tmp_path / "vocab-600" / "vocab.txt").read_text().splitlines()
    assert vocab[0] == "[PAD]" and {"[CLS]", "[SEP]", "[MASK]", "[UNK]", "the"} <= set(vocab)
    assert len(vocab) == 600 and {"a", "##a", "z", "##z"} <= set(vocab)  # any word tokenizes
    data = json.loads((tmp_path / "bert_pld.json").read_text())
    models = data["models"]
    assert models["baseline"] == 4 and models["pld"] >= 4 and models["pld+ltd"] >= 4
    for arm in ("baseline", "pld", "pld+ltd"):
        for task in ("sst2", "mrpc", "rte"):
            (m,) = data["glue"][arm][task]
            assert 0.0 <= m["accuracy"] <= 1.0
    assert "| pld+ltd |" in out and "Mean GLUE score minus the baseline's" in out
    compare = json.loads((tmp_path / "mlm" / "compare.json").read_text())
    assert {r["arm"] for r in compare["runs"]} == {"baseline", "pld", "pld+ltd"}


def test_equal_cost_steps_match_the_baselines_flops(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    load_script: Callable[[str], ModuleType],
) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(shared_data))
    script = load_script("bert_pld")
    scale = script.SCALES["cpu"]
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    (vocab / "vocab.txt").write_text("".join(f"t{i}\n" for i in range(scale.vocab)))
    raw = script.mlm_recipe(scale, vocab)
    base = script.predicted_flops(raw, "baseline", 400)
    for arm in ("pld", "pld+ltd"):
        steps = script.equal_cost_steps(raw, arm, 400)
        assert steps > 400
        assert script.predicted_flops(raw, arm, steps - 1) < base
        assert script.predicted_flops(raw, arm, steps) >= base
