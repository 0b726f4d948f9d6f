"""The trainer's pure parts: LR schedule, GLUE metrics, overrides, masking, local data readers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from leantrain.errors import ConfigError
from leantrain.trainer.data import build_task_data
from leantrain.trainer.metrics import glue_metrics
from leantrain.trainer.recipe import Recipe, apply_overrides, recipe_from_dict
from leantrain.trainer.schedule import lr_at_step
from leantrain.trainer.text import MaskTokens, TokenBlocks


def test_lr_warms_up_then_decays_to_the_floor() -> None:
    kw = {"peak": 1.0, "warmup_steps": 4, "max_steps": 104, "min_ratio": 0.1}
    assert lr_at_step(0, **kw) == pytest.approx(0.2)
    assert lr_at_step(3, **kw) == pytest.approx(0.8)
    assert lr_at_step(4, **kw) == pytest.approx(1.0)
    assert lr_at_step(54, **kw) == pytest.approx(0.55)  # cosine midpoint
    assert lr_at_step(104, **kw) == pytest.approx(0.1)
    assert lr_at_step(54, **kw, decay="linear") == pytest.approx(0.55)
    assert lr_at_step(90, **kw, decay="constant") == 1.0


def test_glue_metrics_against_hand_computation() -> None:
    pred = np.array([1, 1, 0, 0, 1, 0])
    label = np.array([1, 0, 0, 1, 1, 0])
    m = glue_metrics(("accuracy", "f1", "matthews_corr"), pred, label)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * 2 / (3 + 3))  # tp=2, 3 predicted, 3 true
    assert m["matthews_corr"] == pytest.approx((2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3))
    scores = np.array([0.1, 0.4, 0.4, 0.9])
    gold = np.array([1.0, 2.0, 3.0, 5.0])
    m = glue_metrics(("pearson", "spearman"), scores, gold)
    assert m["pearson"] == pytest.approx(np.corrcoef(scores, gold)[0, 1])
    ranks = np.array([1.0, 2.5, 2.5, 4.0])  # the tie shares its average rank
    assert m["spearman"] == pytest.approx(np.corrcoef(ranks, [1, 2, 3, 4])[0, 1])


def test_overrides_set_nested_keys_as_yaml_values() -> None:
    data = {"optim": {"lr": 1.0}, "model": {"family": "gpt2"}}
    out = apply_overrides(data, ["optim.lr=3e-4", "model.config={n_layer: 2}", "seed=5"])
    assert out == {
        "optim": {"lr": 3e-4},
        "model": {"family": "gpt2", "config": {"n_layer": 2}},
        "seed": 5,
    }
    assert data["optim"]["lr"] == 1.0  # the input is not changed
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(data, ["optim.lr"])
    with pytest.raises(ConfigError, match="'family' is not a section"):
        apply_overrides(data, ["model.family.x=1"])


def test_recipe_cross_checks_name_the_key(tmp_path: Path) -> None:
    base = {"task": "sequence_classification", "model": {"family": "bert"}}
    with pytest.raises(ConfigError, match="data.train: required"):
        recipe_from_dict(base)
    with pytest.raises(ConfigError, match="data.glue_task: required"):
        recipe_from_dict({**base, "data": {"train": str(tmp_path)}})
    lm = {"task": "causal_lm", "model": {"family": "gpt2"}, "data": {"train": str(tmp_path)}}
    with pytest.raises(ConfigError, match="optim.decay: 'layer_tokens' needs"):
        recipe_from_dict({**lm, "optim": {"decay": "layer_tokens"}})


def test_mask_tokens_is_seeded_and_spares_special_tokens() -> None:
    ids = torch.randint(5, 100, (4, 64))
    ids[:, 0], ids[:, -1] = 1, 2  # CLS, SEP
    mask = MaskTokens(0.3, mask_id=3, vocab_size=100, special=[0, 1, 2, 3])
    a = mask({"input_ids": ids}, torch.Generator().manual_seed(0), True)
    b = mask({"input_ids": ids}, torch.Generator().manual_seed(0), True)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    picked = a["labels"] != -100
    assert 0.15 < picked.float().mean() < 0.45
    assert not picked[:, 0].any() and not picked[:, -1].any()
    assert torch.equal(a["labels"][picked], ids[picked])
    assert (a["input_ids"][picked] == 3).float().mean() > 0.6


def test_token_blocks_frame_bert_samples() -> None:
    blocks = TokenBlocks(torch.arange(100), 10, wrap=(101, 102))
    assert len(blocks) == 12  # 8 body tokens per sample
    assert blocks[1]["input_ids"].tolist() == [101, *range(8, 16), 102]


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("task", "folder", "metrics"),
    [
        ("sst2", "SST-2", ("accuracy",)),
        ("mrpc", "MRPC", ("accuracy", "f1")),
        ("rte", "RTE", ("accuracy",)),
        ("cola", "CoLA", ("matthews_corr",)),
        ("stsb", "STS-B", ("pearson", "spearman")),
    ],
)
def test_glue_tsv_readers(
    shared_data: Path, task: str, folder: str, metrics: tuple[str, ...]
) -> None:
    recipe = recipe_from_dict(
        {
            "task": "sequence_classification",
            "model": {"family": "bert"},
            "data": {
                "root": str(shared_data),
                "train": f"glue/{folder}",
                "glue_task": task,
                "tokenizer": "bert",
                "tokenizer_path": "tokenizers/bert-base-uncased",
                "subset": 50,
                "seq_len": 64,
            },
        }
    )
    data = build_task_data(recipe)
    assert len(data.train) == 50 and data.metric_names == metrics
    batch = data.collate_fn([data.train[i] for i in range(4)])
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[1] <= 64 and (batch["input_ids"][:, 0] == 101).all()
    labels = [s["labels"] for s in data.valid]
    if task == "stsb":
        assert data.model_fields["num_labels"] == 1 and max(labels) <= 5.0
    else:
        assert set(labels) == {0, 1}


@pytest.mark.shared_data
def test_cifar_zip_reader_takes_a_spread_subset(shared_data: Path) -> None:
    recipe = recipe_from_dict(
        {
            "task": "image_classification",
            "model": {"family": "vit"},
            "data": {
                "root": str(shared_data),
                "train": "vision/cifar10-jpg/cifar10_jpg.zip",
                "subset": 100,
                "valid_subset": 20,
                "image_size": 16,
            },
        }
    )
    data = build_task_data(recipe)
    assert len(data.train) == 100 and len(data.valid) == 20
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (3, 32, 32)
    assert len(set(data.train.labels.tolist())) == 10  # every class in the spread subset
    assert data.transform is not None
    batch = data.transform(
        data.collate_fn([data.train[i] for i in range(8)]), torch.Generator(), True
    )
    assert batch["pixel_values"].shape == (8, 3, 16, 16)
    assert batch["pixel_values"].dtype == torch.float32


def test_roberta_style_position_table_is_sized_for_the_data(tmp_path: Path) -> None:
    """RoBERTa-style models number positions from pad_token_id + 1: the trainer sizes the
    table for data.seq_len when unset, and names the key when it is set or loaded too small."""
    from leantrain.trainer.model import build_model
    from leantrain.trainer.task import TaskData

    (tmp_path / "t.txt").write_text("x")
    tiny = {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2}
    data = TaskData(train=[], valid=None, collate_fn=list, model_fields={"pad_token_id": 0})

    def recipe(seq_len: int, **config: object) -> Recipe:
        return recipe_from_dict(
            {
                "task": "masked_lm",
                "model": {"family": "roberta-prelayernorm", "config": {**tiny, **config}},
                "data": {"train": str(tmp_path / "t.txt"), "seq_len": seq_len},
            }
        )

    model = build_model(recipe(32), data)
    assert model.config.max_position_embeddings == 33  # 32 tokens at positions 1..32
    ids = torch.randint(5, 90, (2, 32))
    assert model(input_ids=ids).logits.shape[:2] == (2, 32)
    assert build_model(recipe(32, pad_token_id=1), data).config.max_position_embeddings == 34
    with pytest.raises(ConfigError, match=r"model.config.max_position_embeddings: got 32.* 33"):
        build_model(recipe(32, max_position_embeddings=32), data)
    model.save_pretrained(tmp_path / "ckpt")
    longer = recipe_from_dict(
        {
            "task": "masked_lm",
            "model": {"pretrained": str(tmp_path / "ckpt")},
            "data": {"train": str(tmp_path / "t.txt"), "seq_len": 40},
        }
    )
    with pytest.raises(ConfigError, match="max_position_embeddings of model.pretrained: got 33"):
        build_model(longer, data)
