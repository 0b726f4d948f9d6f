"""`data.folders`: a corpus of text files under folders, split by file, tokenised once into a cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from leantrain.errors import ConfigError
from leantrain.trainer import text_folder
from leantrain.trainer.data import build_task_data
from leantrain.trainer.recipe import DataSpec, recipe_from_dict
from leantrain.trainer.text_folder import FolderCorpus, corpus_files, folder_streams, split_of
from leantrain.trainer.tokenizer import ByteTokenizer

BYTES = ByteTokenizer()


def _tree(root: Path, n: int = 60) -> Path:
    """`n` small distinct .py files in nested folders (and a .txt file the glob skips)."""
    for i in range(n):
        f = root / f"pkg{i % 3}" / ("sub" if i % 2 else "") / f"m{i}.py"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"# module {i}\n" + "x = 1\n" * (i % 7 + 1))
    (root / "notes.txt").write_text("not python\n")
    return root


def _spec(root: Path, cache: Path, **corpus: object) -> DataSpec:
    folders = FolderCorpus(roots=[str(root)], glob="**/*.py", cache_dir=str(cache), **corpus)  # type: ignore[arg-type]
    return DataSpec(folders=folders, valid_fraction=0.2, selection_fraction=0.2)


def _text(ids: np.ndarray) -> str:
    return bytes(ids.astype(np.uint8)).decode()


def test_every_file_is_in_exactly_one_split_and_streams_hold_whole_files(tmp_path: Path) -> None:
    spec = _spec(_tree(tmp_path / "src"), tmp_path / "cache")
    assert spec.folders is not None
    files = corpus_files(spec.folders, spec)
    assert len(files) == 60 and not any(f.path.suffix == ".txt" for f in files)
    splits = {f.name: split_of(f.name, 0.2, 0.2) for f in files}
    assert {"train", "validation", "selection"} == set(splits.values())
    train, valid = folder_streams(spec, BYTES, "validation")
    _, select = folder_streams(spec, BYTES, "selection")
    assert train.size + valid.size + select.size == sum(f.size for f in files)
    for ids, split in ((train, "train"), (valid, "validation"), (select, "selection")):
        mine = [f for f in files if splits[f.name] == split]
        text = _text(ids)
        assert sorted(text.split("# module ")[1:]) == sorted(
            f.path.read_text().removeprefix("# module ") for f in mine
        )


def test_split_depends_on_names_only_so_it_is_the_same_anywhere(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    b = shutil.copytree(a, tmp_path / "elsewhere" / "a")
    # the same relative root "a" under two data roots
    one = DataSpec(root=str(tmp_path), folders=FolderCorpus(roots=["a"], glob="**/*.py"))
    two = DataSpec(root=str(b.parent), folders=FolderCorpus(roots=["a"], glob="**/*.py"))
    for spec in (one, two):
        assert spec.folders is not None
        spec.folders.cache_dir = str(tmp_path / "cache")
    s1 = [folder_streams(one, BYTES, "validation")[i].tolist() for i in (0, 1)]
    s2 = [folder_streams(two, BYTES, "validation")[i].tolist() for i in (0, 1)]
    assert s1 == s2 and s1[1]


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _tree(tmp_path / "src")
    spec = _spec(src, tmp_path / "cache")
    first = [a.copy() for a in folder_streams(spec, BYTES, "validation")]
    assert len(list((tmp_path / "cache").iterdir())) == 1

    def no_tokenising(*args: object) -> int:
        raise AssertionError("tokenised again")

    with monkeypatch.context() as m:
        m.setattr(text_folder, "_write_stream", no_tokenising)
        again = folder_streams(spec, BYTES, "validation")
    assert [a.tolist() for a in again] == [a.tolist() for a in first]
    assert isinstance(again[0], np.memmap)

    changed = corpus_files(spec.folders, spec)[0]  # type: ignore[arg-type]
    changed.path.write_text(changed.path.read_text() + "y = 2  # new\n")
    after = folder_streams(spec, BYTES, "validation")
    assert "y = 2  # new" in _text(np.concatenate([after[0], after[1]])) + _text(
        folder_streams(spec, BYTES, "selection")[1]
    )
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_max_tokens_caps_each_split_at_its_share(tmp_path: Path) -> None:
    spec = _spec(_tree(tmp_path / "src", n=200), tmp_path / "cache", max_tokens=1000)
    train, valid = folder_streams(spec, BYTES, "validation")
    assert (train.size, valid.size) == (600, 200)
    whole = _spec(tmp_path / "src", tmp_path / "cache2")
    full_train, _ = folder_streams(whole, BYTES, "validation")
    assert full_train.size > 600
    # the cap takes files in hash order: the capped stream starts like a stream of every file
    assert train.tolist() == full_train[:600].tolist()


def test_gpt2_stream_separates_files_with_end_of_text(tmp_path: Path, shared_data: Path) -> None:
    from transformers import GPT2Tokenizer

    tok = GPT2Tokenizer.from_pretrained(str(shared_data / "tokenizers" / "gpt2"))
    spec = _spec(_tree(tmp_path / "src", n=10), tmp_path / "cache")
    train, _ = folder_streams(spec, tok, "validation")
    assert train.dtype == np.uint16
    n_files = sum(split_of(f.name, 0.2, 0.2) == "train" for f in corpus_files(spec.folders, spec))  # type: ignore[arg-type]
    assert int((train == tok.eos_token_id).sum()) == n_files
    assert tok.decode(train[: list(train).index(tok.eos_token_id)]).startswith("# module ")


def test_nested_roots_and_the_interpreters_own_source(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    spec = DataSpec(folders=FolderCorpus(roots=[str(src), str(src / "pkg1")], glob="**/*.py"))
    assert spec.folders is not None
    names = [f.name for f in corpus_files(spec.folders, spec)]
    assert len(names) == 60  # files under pkg1 once, named by the inner root
    assert sum(n.startswith(f"{src / 'pkg1'}/") for n in names) == 20
    std = DataSpec(folders=FolderCorpus(roots=["python:stdlib"], glob="json/*.py"))
    assert std.folders is not None
    found = [f.name for f in corpus_files(std.folders, std)]
    assert "python:stdlib/json/decoder.py" in found


def test_errors_name_the_folder_and_the_glob(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    spec = DataSpec(folders=FolderCorpus(roots=[str(src)], glob="**/*.rs"))
    with pytest.raises(ConfigError, match=rf"no files match '\*\*/\*.rs' in {src}"):
        folder_streams(spec, BYTES, "validation")
    spec.folders = FolderCorpus(roots=[str(tmp_path / "missing")])
    with pytest.raises(ConfigError, match="missing.* is not a folder"):
        folder_streams(spec, BYTES, "validation")
    spec.folders = FolderCorpus(roots=["python:lib"])
    with pytest.raises(ConfigError, match="python:stdlib, python:site-packages"):
        folder_streams(spec, BYTES, "validation")


def test_a_recipe_trains_on_folders(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", n=200)
    recipe = recipe_from_dict(
        {
            "task": "causal_lm",
            "model": {"family": "gpt2"},
            "data": {
                "folders": {"roots": [str(src)], "glob": "**/*.py", "cache_dir": str(tmp_path)},
                "seq_len": 16,
            },
        }
    )
    data = build_task_data(recipe)
    assert data.valid is not None and len(data.valid) > 0
    assert data.train[0]["input_ids"].dtype == torch.int64
    with pytest.raises(ConfigError, match="data.train: required unless"):
        recipe_from_dict({"task": "causal_lm", "model": {"family": "gpt2"}})
