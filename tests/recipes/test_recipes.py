"""Every recipe in recipes/ parses and trains 2 steps on tiny overrides of its model and data."""

from __future__ import annotations

import csv
import shlex
from pathlib import Path

import pytest
import yaml

from leantrain.adopt.compose import enabled_techniques
from leantrain.cli import main
from leantrain.errors import ConfigError
from leantrain.models import family_of_type
from leantrain.trainer.recipe import load_recipe

RECIPES = Path(__file__).parents[2] / "recipes"

_BERT = "{num_hidden_layers: 2, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}"
_GLUE = [
    "model.pretrained=null",
    f"model.config={_BERT}",
    "data.subset=16",
    "data.valid_subset=8",
    "optim.micro_batch_size=4",
]

#: recipe -> overrides that make it tiny (the layer counts the technique sections name are kept)
TINY: dict[str, list[str]] = {
    "bert_mlm_pld.yaml": [
        "model.config={num_hidden_layers: 6, hidden_size: 32, num_attention_heads: 2, "
        "intermediate_size: 64}",
        "data.subset=8",
        "data.valid_subset=4",
        "optim.micro_batch_size=2",
    ],
    "glue_cola.yaml": _GLUE,
    "glue_mrpc.yaml": _GLUE,
    "glue_rte.yaml": _GLUE,
    "glue_sst2.yaml": _GLUE,
    "glue_stsb.yaml": _GLUE,
    "gpt2_curriculum_ltd.yaml": [
        "model.config={n_layer: 6, n_embd: 32, n_head: 2, n_positions: 256}",
        "data.subset=8",
        "data.valid_subset=4",
        "optim.micro_batch_size=2",
    ],
    "gpt2_python_source.yaml": [
        "model.config={n_layer: 12, n_embd: 32, n_head: 2, n_positions: 1024}",
        "data.folders.roots=[python:stdlib]",
        "data.folders.glob=email/*.py",  # some files of the standard library
        "data.folders.max_tokens=20000",
        "data.valid_fraction=0.3",
        "data.subset=4",
        "data.valid_subset=2",
        "optim.micro_batch_size=2",
        "optim.precision=fp32",
    ],
    "vit_cifar10_ltd.yaml": [
        "model.config={patch_size: 4, num_channels: 3, hidden_size: 32, num_hidden_layers: 6, "
        "num_attention_heads: 2, intermediate_size: 64}",
        "data.subset=16",
        "data.valid_subset=8",
        "optim.micro_batch_size=4",
    ],
}


def _args(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def test_every_recipe_has_tiny_overrides() -> None:
    assert sorted(p.name for p in RECIPES.glob("*.yaml")) == sorted(TINY)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(TINY))
def test_recipe_parses(name: str, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANTRAIN_DATA_ROOT", str(shared_data))
    overrides = ["model.pretrained=null"] if name.startswith("glue_") else []
    recipe = load_recipe(RECIPES / name, overrides)
    assert recipe.optim.max_steps >= 1000 and recipe.output_dir.startswith("runs/")
    if name.startswith("glue_"):  # fine-tunes the BERT that bert_mlm_pld.yaml pretrains
        raw = yaml.safe_load((RECIPES / name).read_text())
        bert = load_recipe(RECIPES / "bert_mlm_pld.yaml")
        assert raw["model"]["pretrained"] == f"{bert.output_dir}/model"
        with pytest.raises(ConfigError, match="model.pretrained: no/such/checkpoint is not"):
            load_recipe(RECIPES / name, ["model.pretrained=no/such/checkpoint"])


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(TINY))
def test_recipe_runs_two_steps(
    name: str, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEANTRAIN_DATA_ROOT", str(shared_data))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # data.folders' token cache
    out = tmp_path / "run"
    argv = ["train", str(RECIPES / name), "--max-steps", "2", "--output-dir", str(out)]
    argv += ["--no-progress", *_args([*TINY[name], "eval.max_batches=1", "device=cpu"])]
    assert main(argv) == 0
    with (out / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2"]
    assert all(float(r["loss"]) == float(r["loss"]) for r in rows)  # not NaN
    assert rows[-1]["eval/loss"]
    recipe = load_recipe(RECIPES / name, ["model.pretrained=null"])
    if recipe.config.pld_enabled:
        assert float(rows[-1]["pld/theta"]) < 1.0
    if recipe.config.random_ltd_enabled:
        assert rows[0]["random_ltd/reserved_length"]
    assert (out / "model" / "config.json").is_file()


def test_pld_recipes_use_a_pre_ln_family() -> None:
    """PLD is meant for Pre-LN blocks: the BERT recipe and the GLUE recipes fine-tuning its
    model (and building it when model.pretrained is null) name a Pre-LN family."""
    families = {}
    for path in sorted(RECIPES.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        families[path.name] = raw["model"].get("family")
        if raw.get("progressive_layer_drop", {}).get("enabled"):
            family = family_of_type(families[path.name])
            assert family is not None and family.pre_layernorm, path.name
    bert = families["bert_mlm_pld.yaml"]
    assert bert == "roberta-prelayernorm"
    assert all(f == bert for name, f in families.items() if name.startswith("glue_"))


def _readme_baselines() -> list[list[str]]:
    """The `leantrain train` commands of recipes/README.md's baseline block, as argv lists."""
    text = (RECIPES / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- baselines:", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = block.replace("\\\n", " ").splitlines()
    return [shlex.split(c)[1:] for c in commands if c.strip()]


def test_readme_gives_a_baseline_for_every_recipe_with_a_technique() -> None:
    named = {Path(argv[1]).name for argv in _readme_baselines()}
    with_technique = {
        path.name
        for path in RECIPES.glob("*.yaml")
        if any(
            isinstance(v, dict) and v.get("enabled")
            for v in yaml.safe_load(path.read_text()).values()
        )
    }
    assert named == with_technique


@pytest.mark.shared_data
@pytest.mark.parametrize("argv", _readme_baselines(), ids=lambda a: Path(a[1]).stem)
def test_readme_baselines_load_with_no_technique(
    argv: list[str], shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each baseline command of the README is a valid recipe that turns every technique off."""
    monkeypatch.setenv("LEANTRAIN_DATA_ROOT", str(shared_data))
    assert argv[0] == "train"
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    recipe = load_recipe(Path(__file__).parents[2] / argv[1], overrides)
    assert not enabled_techniques(recipe.config)
