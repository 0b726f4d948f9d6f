"""load_config: DeepSpeed files load unchanged, defaults match DeepSpeed, bad input is explained."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import leantrain
from leantrain import ConfigError, load_config

# The two JSON configs of DeepSpeed's PLD tutorial: the section alone, and the whole BERT file.
PLD_TUTORIAL_SECTION = {"progressive_layer_drop": {"enabled": True, "theta": 0.5, "gamma": 0.001}}
PLD_TUTORIAL_FULL = {
    "train_batch_size": 4096,
    "train_micro_batch_size_per_gpu": 16,
    "steps_per_print": 1000,
    "prescale_gradients": True,
    "gradient_predivide_factor": 8,
    "optimizer": {
        "type": "Adam",
        "params": {"lr": 1e-3, "weight_decay": 0.01, "bias_correction": False},
    },
    "gradient_clipping": 1.0,
    "wall_clock_breakdown": False,
    "fp16": {"enabled": True, "loss_scale": 0},
    "progressive_layer_drop": {"enabled": True, "theta": 0.5, "gamma": 0.001},
}

LEGACY_SEQLEN = {
    "train_batch_size": 512,
    "curriculum_learning": {
        "enabled": True,
        "curriculum_type": "seqlen",
        "min_difficulty": 8,
        "max_difficulty": 1024,
        "schedule_type": "fixed_linear",
        "schedule_config": {"total_curriculum_step": 15000, "difficulty_step": 8},
    },
}

DATA_EFFICIENCY = {
    "train_batch_size": 256,
    "zero_optimization": {"stage": 1},
    "data_efficiency": {
        "enabled": True,
        "seed": 1234,
        "data_sampling": {
            "enabled": True,
            "num_epochs": 1,
            "num_workers": 0,
            "curriculum_learning": {
                "enabled": True,
                "data_cluster_path": "/tmp/clusters",
                "curriculum_metrics": {
                    "vocabularyrarity": {
                        "index_to_sample_path": "/data/voc/index_to_sample",
                        "index_to_metric_path": "/data/voc/index_to_metric",
                        "difficulty_type": "percentile",
                        "clustering_type": "schedule_based",
                        "min_difficulty": 1,
                        "max_difficulty": 100,
                        "schedule_type": "fixed_root",
                        "schedule_config": {
                            "total_curriculum_step": 110000,
                            "difficulty_step": 1,
                            "root_degree": 2,
                        },
                    },
                    "seqlen": {
                        "index_to_sample_path": "/data/len/index_to_sample",
                        "index_to_metric_path": "/data/len/index_to_metric",
                        "difficulty_type": "value",
                        "clustering_type": "single_cluster",
                        "min_difficulty": 80,
                        "max_difficulty": 2048,
                        "schedule_type": "fixed_discrete",
                        "schedule_config": {
                            "difficulty": [80, 512, 2048],
                            "max_step": [1000, 5000],
                        },
                    },
                },
            },
        },
        "data_routing": {
            "enabled": True,
            "random_ltd": {
                "enabled": True,
                "total_layer_num": 24,
                "random_ltd_layer_num": 22,
                "random_ltd_layer_id": list(range(1, 23)),
                "model_mask_name": "attention_mask",
                "model_type": "decoder",
                "hidden_state_order": "seq_batch_dim",
                "random_ltd_schedule": {
                    "min_value": 128,
                    "max_value": 2048,
                    "schedule_type": "fixed_linear",
                    "schedule_config": {"require_steps": 200000, "seq_per_step": 16},
                },
            },
        },
    },
}


def _subset(small: Any, big: Any) -> bool:
    """Whether every key/value of `small` is in `big` (recursively)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            k in big and _subset(v, big[k]) for k, v in small.items()
        )
    return bool(small == big)


@pytest.mark.parametrize(
    "source", [PLD_TUTORIAL_SECTION, PLD_TUTORIAL_FULL, LEGACY_SEQLEN, DATA_EFFICIENCY]
)
def test_deepspeed_configs_load_unchanged_and_round_trip(source: dict[str, Any]) -> None:
    original = copy.deepcopy(source)
    cfg = load_config(source)
    assert source == original, "load_config must not mutate its input"
    out = cfg.to_dict()
    assert _subset(source, out), "every given key survives to_dict() with its value"
    assert load_config(out).to_dict() == out


def test_pld_defaults_match_deepspeed() -> None:
    cfg = load_config({"progressive_layer_drop": {"enabled": True}})
    assert cfg.pld_enabled
    assert cfg.progressive_layer_drop.theta == 0.5
    assert cfg.progressive_layer_drop.gamma == 0.001
    assert cfg.to_dict()["progressive_layer_drop"]["theta"] == 0.5


def test_other_keys_are_kept_untouched() -> None:
    cfg = load_config(PLD_TUTORIAL_FULL)
    out = cfg.to_dict()
    for key in ("optimizer", "fp16", "train_batch_size", "gradient_predivide_factor"):
        assert out[key] == PLD_TUTORIAL_FULL[key]
    assert "data_efficiency" not in out, "sections that were not given are not invented"


def test_enabled_switches_need_every_enclosing_switch() -> None:
    cfg = load_config(DATA_EFFICIENCY)
    assert cfg.curriculum_enabled and cfg.random_ltd_enabled and not cfg.pld_enabled
    off = copy.deepcopy(DATA_EFFICIENCY)
    off["data_efficiency"]["data_routing"]["enabled"] = False
    assert not load_config(off).random_ltd_enabled
    assert cfg.random_ltd.random_ltd_layer_id == list(range(1, 23))
    assert cfg.curriculum.curriculum_metrics["seqlen"].schedule_config.max_step == [1000, 5000]


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_files_load(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"ds_config{suffix}"
    text = json.dumps(DATA_EFFICIENCY) if suffix == ".json" else yaml.safe_dump(DATA_EFFICIENCY)
    path.write_text(text)
    assert load_config(path).to_dict() == load_config(DATA_EFFICIENCY).to_dict()
    assert load_config(str(path)).random_ltd_enabled


def test_passing_a_config_returns_it() -> None:
    cfg = load_config(LEGACY_SEQLEN)
    assert load_config(cfg) is cfg
    assert cfg.seqlen_warmup_enabled


def _with(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """`base` (default: DATA_EFFICIENCY merged with the PLD and legacy sections) with one key set."""
    cfg = copy.deepcopy(
        base if base is not None else {**DATA_EFFICIENCY, **LEGACY_SEQLEN, **PLD_TUTORIAL_SECTION}
    )
    *parents, leaf = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[leaf] = value
    return cfg


RLTD = "data_efficiency.data_routing.random_ltd"
METRIC = "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.seqlen"

BAD_CONFIGS = [
    (
        _with("progressive_layer_drop.thetaa", 0.3),
        "progressive_layer_drop.thetaa: unknown key; did you mean 'theta'?",
    ),
    (_with("progressive_layer_drop.theta", 0.0), "progressive_layer_drop.theta: got 0.0"),
    (_with("progressive_layer_drop.theta", 1.5), "progressive_layer_drop.theta: got 1.5"),
    (_with("progressive_layer_drop.gamma", -0.1), "progressive_layer_drop.gamma: got -0.1"),
    (_with("progressive_layer_drop.gamma", "fast"), "progressive_layer_drop.gamma: got 'fast'"),
    (
        _with("progressive_layer_drop.enabled", "maybe"),
        "progressive_layer_drop.enabled: got 'maybe'",
    ),
    (_with("progressive_layer_drop", 0.5), "progressive_layer_drop: got 0.5"),
    (
        _with("curriculum_learning.min_difficulty", 2048),
        "curriculum_learning.min_difficulty: got 2048 > max_difficulty 1024",
    ),
    (
        _with("curriculum_learning.curriculum_type", "voc"),
        "curriculum_learning.curriculum_type: got 'voc'",
    ),
    (
        _with("curriculum_learning.schedule_type", "fixed_log"),
        "curriculum_learning.schedule_type: got 'fixed_log'",
    ),
    (
        _with("curriculum_learning.schedule_config", {"difficulty_step": 8}),
        "curriculum_learning.schedule_config.total_curriculum_step: required",
    ),
    (
        _with("curriculum_learning.schedule_config.difficulty_stp", 8),
        "did you mean 'difficulty_step'?",
    ),
    (
        _with(f"{METRIC}.schedule_config.difficulty", [80, 2048]),
        "expected one more difficulty than max_step",
    ),
    (_with(f"{METRIC}.schedule_config.max_step", [5000, 1000]), "expected strictly increasing"),
    (_with(f"{METRIC}.difficulty_type", "rank"), "difficulty_type: got 'rank'"),
    (_with(f"{METRIC}.clustering_type", "kmeans"), "clustering_type: got 'kmeans'"),
    (
        _with(
            "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.vocabularyrarity.max_difficulty",
            101,
        ),
        "expected a percentile in [1, 100]",
    ),
    (
        _with("data_efficiency.data_sampling.curriculum_learning.curriculum_metrics", {}),
        "curriculum_metrics: at least one metric required when enabled",
    ),
    (_with(f"{RLTD}.random_ltd_layer_id", [1, 1, 2]), "expected distinct layer ids"),
    (_with(f"{RLTD}.random_ltd_layer_id", [1, 30]), "expected ids below total_layer_num 24"),
    (_with(f"{RLTD}.random_ltd_layer_num", 3), "random_ltd_layer_num: got 3; expected 22"),
    (_with(f"{RLTD}.model_type", "seq2seq"), "model_type: got 'seq2seq'"),
    (_with(f"{RLTD}.hidden_state_order", "bsd"), "hidden_state_order: got 'bsd'"),
    (_with(f"{RLTD}.random_ltd_schedule.min_value", 4096), "min_value: got 4096 > max_value 2048"),
    (
        _with(f"{RLTD}.random_ltd_schedule.schedule_config", {"seq_per_step": 16}),
        "require_steps: required key is missing",
    ),
    (
        _with(f"{RLTD}.random_ltd_schedule.schedule_type", "fixed_root"),
        "schedule_type: got 'fixed_root'",
    ),
    (_with(f"{RLTD}.random_ltd_schedule", None), "random_ltd_schedule: required when enabled"),
    (
        _with(f"{RLTD}.layer_token_lr_schedule", {"enabled": True}),
        "total_layer_tokens: required when enabled",
    ),
    (_with("data_efficiency.seed", -1), "data_efficiency.seed: got -1"),
    (
        _with("progressive_layer_drop.gamma", float("inf")),
        "progressive_layer_drop.gamma: got inf; expected a finite number",
    ),
    (
        _with("progressive_layer_drop.gamma", float("nan")),
        "progressive_layer_drop.gamma: got nan; expected a finite number",
    ),
    (
        _with("curriculum_learning.min_difficulty", 0),
        "curriculum_learning.min_difficulty: got 0; expected a sequence length >= 1",
    ),
    (
        _with("curriculum_learning.min_difficulty", -8),
        "curriculum_learning.min_difficulty: got -8; expected a sequence length >= 1",
    ),
    (
        _with("curriculum_learning.max_difficulty", 0),
        "curriculum_learning.max_difficulty: got 0; expected a sequence length >= 1",
    ),
    (
        _with(
            "curriculum_learning",
            LEGACY_SEQLEN["curriculum_learning"]
            | {
                "schedule_type": "fixed_discrete",
                "schedule_config": {"difficulty": [0, 1024], "max_step": [100]},
            },
        ),
        "curriculum_learning.schedule_config.difficulty: got [0, 1024]; expected sequence "
        "lengths >= 1",
    ),
    (
        {"progresive_layer_drop": {"enabled": True}},
        "progresive_layer_drop: unknown section; did you mean 'progressive_layer_drop'?",
    ),
    ({"data_efficency": {}}, "did you mean 'data_efficiency'?"),
]


@pytest.mark.parametrize(("source", "expected"), BAD_CONFIGS, ids=[e[:40] for _, e in BAD_CONFIGS])
def test_bad_configs_name_the_key_and_what_was_expected(
    source: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)
    assert "Traceback" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.json: config file not found"):
        load_config(tmp_path / "nope.json")


def test_invalid_json_names_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "ds.json"
    path.write_text('{"progressive_layer_drop": {"enabled": true,}}')
    with pytest.raises(ConfigError, match=r"ds\.json: invalid JSON at line 1 column"):
        load_config(path)


def test_invalid_yaml_names_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "ds.yaml"
    path.write_text("progressive_layer_drop:\n  enabled: [true\n")
    with pytest.raises(ConfigError, match=r"ds\.yaml: invalid YAML at line \d+ column \d+"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "ds.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="got a top-level list; expected a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="expected a path to a JSON/YAML file or a dict"):
        load_config(42)  # type: ignore[arg-type]


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"progressive_layer_drop": {"theta": 2}}))
    with pytest.raises(ConfigError, match=r"ds\.json: progressive_layer_drop\.theta: got 2"):
        load_config(path)


def test_min_difficulty_off_the_rounding_grid_warns() -> None:
    source = copy.deepcopy(LEGACY_SEQLEN)
    source["curriculum_learning"]["min_difficulty"] = 1
    with pytest.warns(UserWarning, match="clamps the difficulty to at least 1"):
        load_config(source)


def test_total_layer_token_spelling_is_accepted() -> None:
    source = _with(f"{RLTD}.layer_token_lr_schedule", {"enabled": True, "total_layer_token": 10**9})
    cfg = load_config(source)
    assert cfg.random_ltd.layer_token_lr_schedule.total_layer_tokens == 10**9


def test_validate_on_assignment() -> None:
    cfg = load_config(PLD_TUTORIAL_SECTION)
    with pytest.raises(ValueError):
        cfg.progressive_layer_drop.theta = 0.0


@given(
    theta=st.floats(min_value=1e-6, max_value=1.0),
    gamma=st.floats(min_value=0.0, max_value=10.0),
    extra=st.dictionaries(st.sampled_from(["fp16", "optimizer", "steps_per_print"]), st.integers()),
)
def test_any_valid_pld_section_round_trips(
    theta: float, gamma: float, extra: dict[str, int]
) -> None:
    source = {**extra, "progressive_layer_drop": {"enabled": True, "theta": theta, "gamma": gamma}}
    out = load_config(source).to_dict()
    assert out["progressive_layer_drop"]["theta"] == theta
    assert out["progressive_layer_drop"]["gamma"] == gamma
    assert {k: out[k] for k in extra} == extra


def test_top_level_exports() -> None:
    for name in ("load_config", "ConfigError", "LeantrainConfig"):
        assert name in leantrain.__all__
        assert hasattr(leantrain, name)
