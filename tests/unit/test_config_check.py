"""`leantrain config check FILE` on a whole DeepSpeed config and on bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from leantrain.cli import main

DEEPSPEED_CONFIG: dict[str, Any] = {
    "train_batch_size": 32,
    "train_micro_batch_size_per_gpu": 4,
    "gradient_accumulation_steps": 8,
    "optimizer": {"type": "Adam", "params": {"lr": 1e-4, "betas": [0.8, 0.999]}},
    "fp16": {"enabled": True, "loss_scale": 0},
    "gradient_clipping": 1.0,
    "progressive_layer_drop": {"enabled": True, "theta": 0.5, "gamma": 0.001},
    "data_efficiency": {
        "enabled": True,
        "seed": 1234,
        "data_sampling": {
            "enabled": True,
            "num_epochs": 1,
            "curriculum_learning": {
                "enabled": True,
                "curriculum_metrics": {
                    "seqlen_truncate": {
                        "clustering_type": "single_cluster",
                        "min_difficulty": 64,
                        "max_difficulty": 1024,
                        "schedule_type": "fixed_linear",
                        "schedule_config": {"total_curriculum_step": 2000, "difficulty_step": 8},
                    }
                },
            },
        },
        "data_routing": {
            "enabled": True,
            "random_ltd": {
                "enabled": True,
                "total_layer_num": 12,
                "random_ltd_layer_num": 10,
                "random_ltd_layer_id": list(range(1, 11)),
                "model_mask_name": "attention_mask",
                "model_type": "decoder",
                "hidden_state_order": "batch_seq_dim",
                "random_ltd_schedule": {
                    "min_value": 128,
                    "max_value": 1024,
                    "schedule_type": "fixed_linear",
                    "schedule_config": {"require_steps": 400, "seq_per_step": 8},
                },
            },
        },
    },
}


def write(tmp_path: Path, cfg: dict[str, Any], name: str = "ds_config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return path


def test_check_prints_one_line_per_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check", str(write(tmp_path, DEEPSPEED_CONFIG))]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_key = {line.split(":", 1)[0]: line for line in lines}
    pld = by_key["progressive_layer_drop"]
    # θ(1000) = 0.5·e^(−1) + 0.5 = 0.684; mean keep 1 − 0.5·13/24 = 72.9% for 12 layers
    assert "on, θ̄=0.5 γ=0.001 → θ(1000)=0.684" in pld
    assert "72.9% for 12 layers" in pld
    cur = by_key["data_efficiency.data_sampling.curriculum_learning"]
    assert "seqlen_truncate" in cur and "64 → 1024 by fixed_linear" in cur
    # d(1000) = floor(0.5·960 + 64) = 544, a multiple of 8
    assert "d(1000)=544" in cur
    ltd = by_key["data_efficiency.data_routing.random_ltd"]
    assert "layers [1..10] (10 of 12)" in ltd
    # r(1000) is capped at max_value; at step 0 layer-tokens are (128·10 + 1024·2)/(1024·12)
    assert "r(1000)=1024" in ltd
    assert "27.1% of full" in ltd
    for key in ("optimizer", "fp16", "gradient_clipping"):
        assert by_key[key] == f"{key}: kept, not used by leantrain"
    assert "default micro batch size" in by_key["train_micro_batch_size_per_gpu"]
    assert lines[-1].startswith("leantrain.prepare will apply: random-LTD, PLD, curriculum")


def test_check_reports_sections_that_are_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = {
        "progressive_layer_drop": {"enabled": False},
        "curriculum_learning": {"enabled": False},
        "data_efficiency": {
            "enabled": False,
            "data_routing": DEEPSPEED_CONFIG["data_efficiency"]["data_routing"],
        },
    }
    path = write(tmp_path, cfg, "off.yaml")
    assert main(["config", "check", str(path), "--at-step", "10"]) == 0
    out = capsys.readouterr().out
    assert "progressive_layer_drop: off" in out
    assert "curriculum_learning: off" in out
    assert "random_ltd: off (data_efficiency.enabled is false)" in out
    assert "nothing enabled" in out


def test_legacy_seqlen_warmup_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = {
        "curriculum_learning": {
            "enabled": True,
            "curriculum_type": "seqlen",
            "min_difficulty": 8,
            "max_difficulty": 1024,
            "schedule_type": "fixed_root",
            "schedule_config": {
                "total_curriculum_step": 100,
                "difficulty_step": 8,
                "root_degree": 2,
            },
        }
    }
    assert main(["config", "check", str(write(tmp_path, cfg)), "--at-step", "25"]) == 0
    out = capsys.readouterr().out
    # fixed_root r=2 at 25/100: floor(0.5·1016 + 8) = 516 → 512
    assert "8 → 1024 by fixed_root (root degree 2)" in out
    assert "d(25)=512" in out


def test_bad_file_exits_2_with_the_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = {"progressive_layer_drop": {"enabled": True, "theta": 1.5}}
    assert main(["config", "check", str(write(tmp_path, cfg))]) == 2
    err = capsys.readouterr().err
    assert "progressive_layer_drop.theta: got 1.5" in err
    assert main(["config", "check", str(tmp_path / "missing.json")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_incompatible_mix_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = json.loads(json.dumps(DEEPSPEED_CONFIG))
    cfg["curriculum_learning"] = {
        "enabled": True,
        "curriculum_type": "seqlen",
        "min_difficulty": 64,
        "max_difficulty": 1024,
        "schedule_type": "fixed_linear",
        "schedule_config": {"total_curriculum_step": 100, "difficulty_step": 8},
    }
    assert main(["config", "check", str(write(tmp_path, cfg))]) == 2
    assert "both pace the sequence length" in capsys.readouterr().err
