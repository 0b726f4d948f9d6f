"""Real DeepSpeed configs (examples/deepspeed_configs) load with `config check`, `prepare`
unchanged on a tiny model of their shape, and train a step.

The DeepSpeedExamples GPT-2 templates are rendered as `ds_finetune_gpt2.sh` renders them, with
the values of `ds_finetune_gpt2_run.sh` (its curriculum runs: `seqlen_reshape` or
`seqlen_truncate`, `single_cluster`, index paths `"dummy"`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_roberta_preln
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTForImageClassification

import leantrain
from leantrain.cli import main
from leantrain.curriculum.index import CurriculumIndexError

CONFIGS = Path(__file__).parents[2] / "examples" / "deepspeed_configs"

#: ds_finetune_gpt2_run.sh: global batch 4 (micro 2), random-LTD from 128 over 393 steps.
RUN_SCRIPT = {"GB_SIZE": "4", "MB_SIZE": "2", "LTD_MIN": "128", "LTD_STEP": "393"}
#: ds_finetune_gpt2.sh's defaults for a second metric the run script does not set.
SECOND_METRIC_DEFAULTS = {
    "CL_2nd_METRIC_NAME": "dummy",
    "CL_2nd_SAMPLE_PATH": "dummy",
    "CL_2nd_METRIC_PATH": "dummy",
    "CL_2nd_DIFF_TYPE": "value",
    "CL_2nd_CLUSTER_TYPE": "single_cluster",
    "CL_2nd_MIN": "2048",
    "CL_2nd_MAX": "2048",
    "CL_2nd_TOTAL_STEP": "1",
    "CL_2nd_DIFF_STEP": "1",
    "CL_2nd_ROOT": "1",
}


def _curriculum_run(metric: str, *, ltd: bool) -> dict[str, str]:
    """The run script's curriculum runs: `ltd` picks "curriculum learning + random-LTD"."""
    return {
        **RUN_SCRIPT,
        "LTD_ENABLED": "true" if ltd else "false",
        "DATA_EFFICIENCY_SEED": "1234",
        "CL_ENABLED": "true",
        "DATA_SAMPLING_NUM_WORKERS": "0",
        "CL_CLUSTER_PATH": f"./data_cluster/gpt2-medium_{metric}",
        "CL_1st_METRIC_NAME": metric,
        "CL_1st_SAMPLE_PATH": "dummy",
        "CL_1st_METRIC_PATH": "dummy",
        "CL_1st_DIFF_TYPE": "value",
        "CL_1st_CLUSTER_TYPE": "single_cluster",
        "CL_1st_MIN": "32",
        "CL_1st_MAX": "1024",
        "CL_1st_TOTAL_STEP": "131" if ltd else "917",
        "CL_1st_DIFF_STEP": "8",
        "CL_1st_ROOT": "1",
    }


def render(template: str, values: dict[str, str]) -> dict[str, Any]:
    """The template with every placeholder replaced, longest first (as the script's `sed`s do
    one by one; `CL_1st_MIN` is not a prefix of another placeholder)."""
    text = (CONFIGS / template).read_text(encoding="utf-8")
    for key in sorted(values, key=len, reverse=True):
        text = text.replace(key, values[key])
    return json.loads(text)


def gpt2(layers: int, positions: int = 1024) -> nn.Module:
    """A tiny GPT-2 with `layers` blocks (12: gpt2, 24: gpt2-medium)."""
    cfg = GPT2Config(
        vocab_size=97, n_embd=32, n_layer=layers, n_head=4, n_positions=positions,
        bos_token_id=0, eos_token_id=0, attn_implementation="eager",
    )  # fmt: skip
    return GPT2LMHeadModel(cfg)


def vit197() -> nn.Module:
    """A tiny ViT with ViT-B/16's 197 tokens (196 patches + CLS), 12 blocks."""
    cfg = ViTConfig(
        image_size=56, patch_size=4, hidden_size=32, num_hidden_layers=12, num_attention_heads=4,
        intermediate_size=64, num_labels=10,
    )  # fmt: skip
    return ViTForImageClassification(cfg)


class Tokens(torch.utils.data.Dataset):
    """Causal-LM samples of `seq` random tokens."""

    def __init__(self, rows: int, seq: int) -> None:
        self.ids = torch.randint(1, 97, (rows, seq), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _lm_batch(seq: int) -> dict[str, torch.Tensor]:
    """Two causal-LM samples of `seq` tokens."""
    ids = torch.randint(1, 97, (2, seq), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _train_step(handle: leantrain.LeantrainHandle, batch: dict[str, torch.Tensor]) -> None:
    model = handle.model
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    out = model(**handle.process_batch(batch))
    loss = out.loss if "labels" in batch else out.logits.float().mean()
    loss.backward()
    optimizer.step()
    handle.step()
    assert torch.isfinite(loss)


def _check(path: Path | dict[str, Any], tmp_path: Path) -> None:
    """`leantrain config check` exits 0 on the file as written."""
    if isinstance(path, dict):
        rendered = tmp_path / "rendered.json"
        rendered.write_text(json.dumps(path), encoding="utf-8")
        path = rendered
    assert main(["config", "check", str(path)]) == 0


def test_every_config_file_is_tested() -> None:
    tested = {
        "deepspeed_bsz4k_progressive_layer_drop_config_seq128.json",
        "ds_config_gpt_base_random_ltd.json",
        "ds_config_gpt_medium_random_ltd.json",
        "ds_config_cifar_random_ltd.json",
        "ds_config_imagenet_random_ltd.json",
        "ds_config_gpt2_TEMPLATE.json",
        "ds_config_gpt2-medium_1clmetric_TEMPLATE.json",
        "ds_config_gpt2-medium_2clmetrics_TEMPLATE.json",
        "configjson_data_efficiency.json",
        "tutorial_legacy_curriculum.json",
    }
    assert {p.name for p in CONFIGS.glob("*.json")} == tested
    assert (CONFIGS / "README.md").is_file()  # origin and licence beside them


def test_bing_bert_pld(tmp_path: Path) -> None:
    path = CONFIGS / "deepspeed_bsz4k_progressive_layer_drop_config_seq128.json"
    _check(path, tmp_path)
    torch.manual_seed(0)
    handle = leantrain.prepare(make_roberta_preln(), path, seq_length=16)
    assert [t.name for t in handle.techniques] == ["pld"]
    assert handle.step_tokens().tokens == 4096 * 16  # micro 16 × 256 accumulation steps
    ids = torch.randint(1, 97, (2, 16))
    _train_step(handle, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})


@pytest.mark.parametrize(
    ("name", "layers"),
    [("ds_config_gpt_base_random_ltd.json", 12), ("ds_config_gpt_medium_random_ltd.json", 24)],
)
def test_gpt_random_ltd(name: str, layers: int, tmp_path: Path) -> None:
    _check(CONFIGS / name, tmp_path)
    torch.manual_seed(0)
    handle = leantrain.prepare(gpt2(layers), CONFIGS / name)
    assert handle.metrics()["random_ltd/reserved_length"] == 128
    _train_step(handle, _lm_batch(136))  # 136 tokens: converted blocks keep 128


@pytest.mark.parametrize(
    "name", ["ds_config_cifar_random_ltd.json", "ds_config_imagenet_random_ltd.json"]
)
def test_vit_random_ltd(name: str, tmp_path: Path) -> None:
    """model_type "decoder" for a ViT, as DeepSpeedExamples writes it: fine, ViT has no mask."""
    _check(CONFIGS / name, tmp_path)
    torch.manual_seed(0)
    handle = leantrain.prepare(vit197(), CONFIGS / name)
    pixels = torch.randn(2, 3, 56, 56)
    _train_step(handle, {"pixel_values": pixels, "labels": torch.tensor([1, 2])})


@pytest.mark.parametrize("ltd", ["true", "false"])
def test_gpt2_template_rendered(ltd: str, tmp_path: Path) -> None:
    config = render("ds_config_gpt2_TEMPLATE.json", {**RUN_SCRIPT, "LTD_ENABLED": ltd})
    _check(config, tmp_path)
    handle = leantrain.prepare(gpt2(12), config)
    assert [t.name for t in handle.techniques] == (["random_ltd"] if ltd == "true" else [])
    _train_step(handle, _lm_batch(136))


@pytest.mark.parametrize("metric", ["seqlen_reshape", "seqlen_truncate"])
@pytest.mark.parametrize("ltd", [False, True], ids=["curriculum", "curriculum+ltd"])
def test_gpt2_medium_curriculum_rendered(
    metric: str, ltd: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """DeepSpeed ignores the "dummy" index of a single_cluster metric; so does leantrain, and
    says so once."""
    config = render(
        "ds_config_gpt2-medium_1clmetric_TEMPLATE.json", _curriculum_run(metric, ltd=ltd)
    )
    _check(config, tmp_path)
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="leantrain"):
        handle = leantrain.prepare(gpt2(24), config, Tokens(16, 128))
    ignored = [r for r in caplog.records if "nothing at 'dummy'" in r.getMessage()]
    assert len(ignored) == 1
    loader = iter(handle.dataloader())
    batch = next(loader)
    assert batch["input_ids"].shape[1] == 32  # d(1) = 32: cut (or folded) to the current length
    if metric == "seqlen_reshape":
        assert batch["input_ids"].shape[0] == 2 * 128 // 32  # the same tokens, folded
    _train_step(handle, batch)


def test_gpt2_medium_two_metrics_rendered(tmp_path: Path) -> None:
    """The 2-metric template with the run script's first metric and the shell script's defaults
    for the second (`dummy`, single_cluster): both indexes are ignored, as DeepSpeed does."""
    values = {**_curriculum_run("seqlen_truncate", ltd=True), **SECOND_METRIC_DEFAULTS}
    config = render("ds_config_gpt2-medium_2clmetrics_TEMPLATE.json", values)
    _check(config, tmp_path)
    handle = leantrain.prepare(gpt2(24), config, Tokens(16, 128))
    assert handle.metrics()["curriculum/difficulty/dummy"] == 2048
    _train_step(handle, next(iter(handle.dataloader())))


def test_data_efficiency_doc_example_names_its_placeholder_index(tmp_path: Path) -> None:
    """DeepSpeed's documentation example points a schedule_based metric at /path/to/...: both
    DeepSpeed and leantrain need that index, and leantrain's error names it."""
    path = CONFIGS / "configjson_data_efficiency.json"
    _check(path, tmp_path)
    model = gpt2(24, positions=64)
    with pytest.raises(CurriculumIndexError, match="/path/to/index_to_sample"):
        leantrain.prepare(model, path, Tokens(8, 64), micro_batch_size=2)
    assert type(model.transformer.h[1]).__name__ == "GPT2Block"  # nothing half-done


def test_legacy_curriculum_tutorial(tmp_path: Path) -> None:
    path = CONFIGS / "tutorial_legacy_curriculum.json"
    _check(path, tmp_path)
    handle = leantrain.prepare(gpt2(4), path)
    assert handle.metrics()["curriculum/difficulty"] == 8
    batch = handle.process_batch(_lm_batch(64))
    assert batch["input_ids"].shape[1] == 8
    _train_step(handle, _lm_batch(64))
