"""Per-sample validation losses, their standard error, and the selection split."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_gpt2, make_roberta_preln
from hypothesis import given
from hypothesis import strategies as st

from leantrain.errors import ConfigError
from leantrain.trainer.evalstats import mean_and_se, sample_losses
from leantrain.trainer.recipe import recipe_from_dict
from leantrain.trainer.text import _lm_texts


@torch.no_grad()
def test_per_sample_losses_add_up_to_the_models_own_loss() -> None:
    torch.manual_seed(0)
    ids = torch.randint(1, 97, (3, 16))
    gpt = make_gpt2()
    out = gpt(input_ids=ids, labels=ids)
    s, c = sample_losses("causal_lm", out.logits, ids)
    assert c.tolist() == [15, 15, 15]
    assert float(s.sum() / c.sum()) == pytest.approx(float(out.loss), rel=1e-5)
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, :5] = ids[0, 3], ids[1, :5]  # ragged masks; row 2 scores nothing
    out = make_roberta_preln()(input_ids=ids, labels=labels)
    s, c = sample_losses("masked_lm", out.logits, labels)
    assert c.tolist() == [1, 5, 0] and float(s[2]) == 0.0
    assert float(s.sum() / c.sum()) == pytest.approx(float(out.loss), rel=1e-5)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    s, c = sample_losses("sequence_classification", logits, torch.tensor([0, 0]))
    assert s.tolist() == pytest.approx([math.log(1 + math.exp(-2)), math.log(1 + math.e)])
    s, _ = sample_losses("sequence_classification", torch.tensor([[1.0]]), torch.tensor([3.0]))
    assert s.tolist() == [4.0]


@given(
    st.lists(
        st.tuples(st.floats(0, 50), st.integers(1, 20)).map(lambda t: (t[0] * t[1], t[1])),
        min_size=2,
        max_size=40,
    )
)
def test_standard_error_is_the_ratio_estimators(samples: list[tuple[float, int]]) -> None:
    sums = torch.tensor([s for s, _ in samples], dtype=torch.float64)
    counts = torch.tensor([c for _, c in samples], dtype=torch.float64)
    mean, se = mean_and_se(sums, counts)
    assert mean == pytest.approx(float(sums.sum() / counts.sum()))
    n, cbar = len(samples), float(counts.mean())
    resid = sums.numpy() - mean * counts.numpy()
    assert se == pytest.approx(math.sqrt(np.var(resid, ddof=1) / n) / cbar, rel=1e-6, abs=1e-12)


def test_equal_lengths_reduce_to_the_usual_standard_error_of_the_mean() -> None:
    per_seq = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    mean, se = mean_and_se(per_seq * 10, torch.full((4,), 10.0))
    assert mean == pytest.approx(3.0)
    assert se == pytest.approx(float(per_seq.std() / 2))
    assert math.isnan(mean_and_se(torch.tensor([1.0]), torch.tensor([1.0]))[1])


def _recipe(root: Path, **data: object) -> object:
    return recipe_from_dict(
        {
            "task": "causal_lm",
            "model": {"family": "gpt2"},
            "data": {"root": str(root), "train": "corpus", "glob": "*.txt", **data},
        }
    )


def test_selection_split_is_disjoint_from_validation_and_never_trained_on(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(40):
        (folder / f"{i:02d}.txt").write_text(f"file {i:02d}\n")
    spec = _recipe(tmp_path, valid_fraction=0.05, selection_fraction=0.05).data  # type: ignore[attr-defined]
    train, valid = _lm_texts(spec, "validation")
    _, select = _lm_texts(spec, "selection")
    assert valid == ["file 19\n", "file 39\n"] and select == ["file 09\n", "file 29\n"]
    assert len(train) == 36 and not set(train) & set(valid + select)
    plain = _recipe(tmp_path, valid_fraction=0.05).data  # type: ignore[attr-defined]
    assert _lm_texts(plain, "validation")[1] == valid and len(_lm_texts(plain)[0]) == 38


def test_one_text_is_cut_into_train_selection_and_validation(tmp_path: Path) -> None:
    (tmp_path / "corpus").write_text("".join(f"{i:03d}" for i in range(100)))
    spec = _recipe(tmp_path, valid_fraction=0.1, selection_fraction=0.2).data  # type: ignore[attr-defined]
    (train,), (valid,) = _lm_texts(spec, "validation")
    (select,) = _lm_texts(spec, "selection")[1]
    assert train + select + valid == "".join(f"{i:03d}" for i in range(100))
    assert (len(train), len(select), len(valid)) == (210, 60, 30)


def test_selection_needs_its_fraction(tmp_path: Path) -> None:
    (tmp_path / "corpus").write_text("abc")
    with pytest.raises(ConfigError, match="selection_fraction"):
        recipe_from_dict(
            {
                "task": "causal_lm",
                "model": {"family": "gpt2"},
                "data": {"root": str(tmp_path), "train": "corpus"},
                "eval": {"split": "selection"},
            }
        )
