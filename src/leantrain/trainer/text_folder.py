"""A language-model corpus of text files under one or more folders, split by file, tokenised once.

`data.folders` in a recipe names the folders (a path, or `python:stdlib` / `python:site-packages`:
the source of the interpreter that runs the trainer, which every machine has) and a recursive
glob. Each file goes to the train, validation or selection split by a hash of its name (the
folder as written plus its path inside it), so the split is the same on every run and a file
added later leaves the others where they were. Each split's token stream is written once per
file set, tokenizer and cap into a cache folder (temp + rename) and memory-mapped by later runs;
files separate with the tokenizer's end-of-text id. `max_tokens` caps the corpus, each split
keeping its share and taking files in hash order, so a capped corpus is an even sample of all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from leantrain.errors import ConfigError
from leantrain.files import atomic_write_json, temp_path, writing

if TYPE_CHECKING:
    from leantrain.trainer.recipe import DataSpec

__all__ = ["PYTHON_ROOTS", "SPLITS", "FolderCorpus", "corpus_files", "folder_streams", "split_of"]

SPLITS = ("train", "validation", "selection")
#: `python:NAME` roots: folders of the running interpreter's own source.
PYTHON_ROOTS = {"stdlib": ("stdlib",), "site-packages": ("purelib", "platlib")}
#: Bytes of text tokenised per batch (the fast tokenizer encodes a batch on all cores).
_BATCH_BYTES = 8 * 2**20
_FORMAT = 1  # bump when the cache layout or the stream's make-up changes


class FolderCorpus(BaseModel):
    """`data.folders`: the folders of text files a language-model corpus is read from."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    roots: list[str] = Field(
        min_length=1,
        description="Folders (relative ones under data.root), or python:stdlib / "
        "python:site-packages for the running interpreter's source.",
    )
    glob: str = Field(default="**/*.txt", description="Files to read in each folder (** recurses).")
    max_tokens: int | None = Field(
        default=None, ge=1, description="Cap on the corpus's tokens; each split keeps its share."
    )
    cache_dir: str | None = Field(
        default=None,
        description="Where token streams are cached (default $XDG_CACHE_HOME/leantrain/tokens, "
        "else ~/.cache/leantrain/tokens).",
    )


@dataclass(frozen=True)
class SourceFile:
    """One file of the corpus: `name` (root label / relative path) decides its split."""

    name: str
    path: Path
    size: int
    mtime_ns: int


def _root_folders(entry: str, spec: DataSpec) -> list[Path]:
    if not entry.startswith("python:"):
        return [spec.resolve(entry)]
    keys = PYTHON_ROOTS.get(entry.removeprefix("python:"))
    if keys is None:
        raise ConfigError(
            f"data.folders.roots: unknown {entry!r}; expected a folder or one of "
            f"{', '.join('python:' + k for k in PYTHON_ROOTS)}"
        )
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(Path(paths[k]).resolve() for k in keys))


def corpus_files(corpus: FolderCorpus, spec: DataSpec) -> list[SourceFile]:
    """Every file matching the glob under the roots, sorted by name. A file under two roots
    (site-packages inside the stdlib folder) belongs to the innermost one only."""
    roots = [(entry, f) for entry in corpus.roots for f in _root_folders(entry, spec)]
    for entry, folder in roots:
        if not folder.is_dir():
            raise ConfigError(f"data.folders.roots: {entry!r} -> {folder} is not a folder")
    files: dict[str, SourceFile] = {}
    for entry, folder in roots:
        inner = [f for _, f in roots if f != folder and f.is_relative_to(folder)]
        found = 0
        for path in folder.glob(corpus.glob):
            if any(path.is_relative_to(f) for f in inner) or not path.is_file():
                continue
            stat = path.stat()
            name = f"{entry}/{path.relative_to(folder).as_posix()}"
            files[name] = SourceFile(name, path, stat.st_size, stat.st_mtime_ns)
            found += 1
        if found == 0:
            raise ConfigError(
                f"data.folders.glob: no files match {corpus.glob!r} in {folder} ({entry!r})"
            )
    return [files[k] for k in sorted(files)]


def _unit(name: str) -> float:
    """A uniform draw in [0, 1) fixed by `name`."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:15], 16) / 16**15


def split_of(name: str, valid_fraction: float, selection_fraction: float) -> str:
    """The split of the file called `name`: validation, selection or train."""
    u = _unit(name)
    if u < valid_fraction:
        return "validation"
    return "selection" if u < valid_fraction + selection_fraction else "train"


def _tokenizer_id(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else type(tokenizer).__name__
    return (
        f"{type(tokenizer).__name__}:{len(tokenizer) if backend else 256}:"
        + hashlib.sha256(text.encode()).hexdigest()
    )


def _encode_batch(tokenizer: Any, texts: list[str], eos: int | None) -> np.ndarray:
    """One batch of files as one id array, each file followed by `eos` (when there is one)."""
    if backend := getattr(tokenizer, "backend_tokenizer", None):
        ids = [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    else:
        ids = tokenizer.encode(texts)
    tail = [np.array([eos], np.int64)] if eos is not None else []
    chunks = [part for seq in ids for part in (np.asarray(seq, np.int64), *tail)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


def _batches(
    files: list[SourceFile], batch_bytes: Callable[[], int]
) -> Iterator[tuple[list[str], int]]:
    """(texts, bytes) of consecutive files, about `batch_bytes()` at a time."""
    texts: list[str] = []
    size = 0
    for f in files:
        texts.append(f.path.read_text(encoding="utf-8", errors="replace"))
        size += f.size
        if size >= batch_bytes():
            yield texts, size
            texts, size = [], 0
    if texts:
        yield texts, size


def _write_stream(
    path: Path, files: list[SourceFile], tokenizer: Any, dtype: type, cap: int | None
) -> int:
    """Tokenise `files` in order into the raw array file `path`, stopping at `cap` tokens."""
    eos = getattr(tokenizer, "eos_token_id", None)
    count = 0

    def batch_bytes() -> int:  # near the cap, about what the tokens still wanted take
        return _BATCH_BYTES if cap is None else min(_BATCH_BYTES, max(2**16, 4 * (cap - count)))

    with writing(path), open(path, "wb") as fh:
        bar = tqdm(
            total=sum(f.size for f in files), unit="B", unit_scale=True, mininterval=5,
            desc=f"tokenising {path.stem}",
        )  # fmt: skip
        with bar:
            for texts, size in _batches(files, batch_bytes):
                ids = _encode_batch(tokenizer, texts, eos)
                if cap is not None:
                    ids = ids[: cap - count]
                fh.write(ids.astype(dtype).tobytes())
                count += ids.size
                bar.update(size)
                if cap is not None and count >= cap:
                    break
    return count


def _read_stream(folder: Path, split: str, meta: dict[str, Any]) -> np.ndarray:
    count, dtype = meta["tokens"][split], np.dtype(meta["dtype"])
    if count == 0:  # an empty file cannot be mapped
        return np.zeros(0, dtype)
    return np.memmap(folder / f"{split}.bin", dtype=dtype, mode="r", shape=(count,))


def folder_streams(spec: DataSpec, tokenizer: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of the training split and of held-out `split` ("validation" or "selection")
    of `spec.folders`, from the cache (tokenised into it first when not there)."""
    corpus = spec.folders
    assert corpus is not None
    if spec.valid is not None:
        raise ConfigError("data.valid: not used with data.folders (set data.valid_fraction)")
    shares = {"validation": spec.valid_fraction, "selection": spec.selection_fraction or 0.0}
    shares["train"] = 1.0 - shares["validation"] - shares["selection"]
    parts: dict[str, list[SourceFile]] = {s: [] for s in SPLITS}
    for f in corpus_files(corpus, spec):
        parts[split_of(f.name, shares["validation"], shares["selection"])].append(f)
    for files in parts.values():  # hash order: a capped split is an even sample of its files
        files.sort(key=lambda f: _unit(f.name))
    key = {
        "format": _FORMAT,
        "glob": corpus.glob,
        "max_tokens": corpus.max_tokens,
        "tokenizer": _tokenizer_id(tokenizer),
        "files": {s: [(f.name, f.size, f.mtime_ns) for f in fs] for s, fs in parts.items()},
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    folder = _cache_base(corpus) / digest
    if not (folder / "meta.json").is_file():
        _build(folder, parts, shares, tokenizer, corpus.max_tokens)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return _read_stream(folder, "train", meta), _read_stream(folder, split, meta)


def _cache_base(corpus: FolderCorpus) -> Path:
    if corpus.cache_dir is not None:
        return Path(corpus.cache_dir).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "leantrain" / "tokens"


def _build(
    folder: Path,
    parts: dict[str, list[SourceFile]],
    shares: dict[str, float],
    tokenizer: Any,
    max_tokens: int | None,
) -> None:
    """Write every split's stream and meta.json into a temp folder, then rename it to `folder`."""
    size = len(tokenizer) if getattr(tokenizer, "backend_tokenizer", None) else 256
    dtype = np.uint16 if size <= 2**16 else np.uint32
    tmp = temp_path(folder)
    tmp.mkdir(parents=True, exist_ok=True)
    tokens = {}
    for split, files in parts.items():
        cap = None if max_tokens is None else round(max_tokens * shares[split])
        tokens[split] = _write_stream(tmp / f"{split}.bin", files, tokenizer, dtype, cap)
    meta = {"dtype": np.dtype(dtype).name, "tokens": tokens}
    meta["files"] = {s: len(fs) for s, fs in parts.items()}
    atomic_write_json(tmp / "meta.json", meta)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished the same cache first: keep theirs
        if not (folder / "meta.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
