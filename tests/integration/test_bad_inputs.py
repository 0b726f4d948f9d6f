"""Bad recipes, command arguments and API calls end in one error line of leantrain's own type
that names the key, never in a raw traceback from torch or transformers (issue 13)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import all_three_sections, make_gpt2
from test_trainer import tiny_recipe, write_corpus, write_recipe

import leantrain
from leantrain.cli import main
from leantrain.errors import ConfigError, LeantrainError, StateError
from leantrain.trainer import build_model, load_recipe, recipe_from_dict, train
from leantrain.trainer.task import TaskData

# -- recipes and command arguments -------------------------------------------------------------

#: (id, `--set` overrides, extra arguments, error type, text the one error line must hold)
RECIPES: list[tuple[str, list[str], list[str], type[Exception], str]] = [
    ("beta above 1", ["optim.betas=[0.9, 1.5]"], [], ConfigError, "optim.betas.1: got 1.5"),
    ("beta below 0", ["optim.betas=[-0.1, 0.9]"], [], ConfigError, "optim.betas.0: got -0.1"),
    ("unknown device", ["device=tpu"], [], ConfigError, "device: got 'tpu'"),
    ("no blocks", ["model.config.n_layer=0"], [], ConfigError, "model.config.n_layer: got 0"),
    ("unknown family", ["model.family=bertt"], [], ConfigError, "model.family: got 'bertt'; did you mean 'bert'?"),
    ("gpt2 positions", ["data.seq_len=128"], [], ConfigError, "model.config.n_positions: got 64"),
    (
        "llama positions",
        ["model.family=llama", "model.config={num_hidden_layers: 2, hidden_size: 32, "
         "num_attention_heads: 2, intermediate_size: 64, max_position_embeddings: 16}"],
        [],
        ConfigError,
        "model.config.max_position_embeddings: got 16; data.seq_len 32 needs at least 32",
    ),
    ("short validation share", ["data.valid_fraction=0.0005"], [], ConfigError,
     "data.valid_fraction: the held-out validation share (0.0005): "),
    ("negative stop", [], ["--stop-at", "-1"], ConfigError, "stop_at (--stop-at): got -1"),
    ("zero stop", [], ["--stop-at", "0"], ConfigError, "stop_at (--stop-at): got 0"),
    ("resume and overwrite", [], ["--resume", "--overwrite"], ConfigError, "--resume and --overwrite"),
]  # fmt: skip


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 recipe without techniques (80 validation tokens of 8000)."""
    tmp = tmp_path_factory.mktemp("bad")
    recipe = tiny_recipe(
        write_corpus(tmp / "corpus.txt", chars=8000), tmp / "run", techniques=False
    )
    return write_recipe(tmp / "recipe.yaml", recipe)


def _call(args: list[str]) -> Callable[[], Any]:
    """`train` as `leantrain train` would call it with `args` (--resume, --overwrite, --stop-at)."""
    stop_at = int(args[args.index("--stop-at") + 1]) if "--stop-at" in args else None
    return lambda recipe: train(
        recipe,
        resume="--resume" in args,
        overwrite="--overwrite" in args,
        stop_at=stop_at,
        progress=False,
    )


@pytest.mark.parametrize(
    ("overrides", "args", "kind", "expected"),
    [case[1:] for case in RECIPES],
    ids=[case[0] for case in RECIPES],
)
def test_a_bad_recipe_or_argument_is_one_error_line_naming_the_key(
    recipe_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    args: list[str],
    kind: type[Exception],
    expected: str,
) -> None:
    sets = [*overrides, f"output_dir={tmp_path / 'run'}"]
    with pytest.raises(kind) as caught:
        _call(args)(load_recipe(recipe_file, sets))
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert "data.train" not in str(caught.value)  # the training data is never blamed wrongly
    capsys.readouterr()
    flags = [arg for o in sets for arg in ("--set", o)]
    assert main(["train", str(recipe_file), *args, *flags, "--no-progress"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and expected in errors[0], errors
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("task", "family", "config", "key"),
    [
        ("causal_lm", "gpt2", {"n_positions": 16}, "model.config.n_positions: got 16"),
        ("masked_lm", "bert", {"max_position_embeddings": 16},
         "model.config.max_position_embeddings: got 16"),
        ("causal_lm", "llama", {"max_position_embeddings": 16},
         "model.config.max_position_embeddings: got 16"),
        ("masked_lm", "roberta-prelayernorm", {"max_position_embeddings": 32},
         "model.config.max_position_embeddings: got 32; roberta-prelayernorm numbers positions "
         "from pad_token_id + 1 = 2, so data.seq_len 32 needs at least 34"),
        ("causal_lm", "gpt2", {"n_layer": 0}, "model.config.n_layer: got 0"),
        ("causal_lm", "llama", {"num_hidden_layers": 0}, "model.config.num_hidden_layers: got 0"),
    ],
    ids=["gpt2", "bert", "llama", "roberta-prelayernorm", "gpt2-no-blocks", "llama-no-blocks"],
)  # fmt: skip
def test_every_family_is_checked_for_positions_and_blocks(
    tmp_path: Path, task: str, family: str, config: dict[str, Any], key: str
) -> None:
    """The position table was checked for RoBERTa-style models only; the others failed with an
    index error deep in their embeddings (or, without blocks, somewhere in the techniques)."""
    (tmp_path / "t.txt").write_text("x")
    small = (
        {"n_layer": 2, "n_embd": 16, "n_head": 2}
        if family == "gpt2"
        else {"num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 2}
    )
    recipe = recipe_from_dict(
        {
            "task": task,
            "model": {"family": family, "config": {**small, **config}},
            "data": {"train": str(tmp_path / "t.txt"), "seq_len": 32},
        }
    )
    data = TaskData(train=[], valid=None, collate_fn=list, model_fields={"pad_token_id": 1})
    with pytest.raises(ConfigError) as caught:
        build_model(recipe, data)
    assert str(caught.value).startswith(key) and "\n" not in str(caught.value)


# -- the Python API ------------------------------------------------------------------------------


def _all_three() -> dict[str, Any]:
    return all_three_sections(gamma=0.01, curriculum_steps=4, ltd_steps=4)


def _samples() -> list[dict[str, torch.Tensor]]:
    ids = torch.randint(1, 97, (16, 32), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": row} for row in ids]


def _state_without(*path: str) -> Callable[[], None]:
    """Load a handle state with the key at `path` removed."""

    def call() -> None:
        handle = leantrain.prepare(make_gpt2(), _all_three(), _samples(), micro_batch_size=2)
        state = copy.deepcopy(handle.state_dict())
        node = state
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        handle.load_state_dict(state)

    return call


API_CALLS: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    (
        "micro batch 0",
        lambda: leantrain.prepare(make_gpt2(), _all_three(), _samples(), micro_batch_size=0),
        ConfigError,
        "micro_batch_size: got 0",
    ),
    (
        "micro batch -2",
        lambda: leantrain.prepare(make_gpt2(), {}, _samples(), micro_batch_size=-2),
        ConfigError,
        "micro_batch_size: got -2",
    ),
    ("state without techniques", _state_without("techniques"), StateError, "missing key 'techniques'"),
    ("state without step", _state_without("global_step"), StateError, "missing key 'global_step'"),
    ("state without tokens", _state_without("tokens"), StateError, "missing key 'tokens'"),
    (
        "technique state without a key",
        _state_without("techniques", "random_ltd", "min_value"),
        StateError,
        "techniques.random_ltd: missing key 'min_value'",
    ),
    (
        "PLD state without a key",
        _state_without("techniques", "pld", "forward_index"),
        StateError,
        "missing keys ['forward_index']",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "kind", "expected"),
    [case[1:] for case in API_CALLS],
    ids=[case[0] for case in API_CALLS],
)
def test_a_bad_api_call_is_a_leantrain_error_naming_the_key(
    call: Callable[[], Any], kind: type[Exception], expected: str
) -> None:
    with pytest.raises(kind) as caught:
        call()
    assert isinstance(caught.value, LeantrainError)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
