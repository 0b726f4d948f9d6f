"""`leantrain analyze CONFIG`: run the curriculum data analyzer from a YAML/JSON file.

Example (SST-2 tokenised with a local BERT vocabulary)::

    source:
      kind: text
      path: data/glue/SST-2/train.tsv
      text_column: sentence
      tokenizer: {kind: bert, vocab_file: data/tokenizers/bert-base-uncased/vocab.txt}
    output_dir: runs/sst2-index
    metrics: [seqlen, vocab_rarity]
    num_workers: 2

`vocab_rarity` needs the vocabulary size: taken from the tokenizer of a `text` source, else
give `vocab_size`. Under `torchrun` (WORLD_SIZE > 1) every rank maps its share of the parts and
rank 0 reduces.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leantrain.curriculum.analyzer import STAGES, DataAnalyzer
from leantrain.curriculum.sources import ArraySource
from leantrain.errors import ConfigError

__all__ = ["AnalyzeConfig", "SourceConfig", "TokenizerConfig", "add_arguments", "build", "run"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenizerConfig(_Strict):
    """A local tokenizer (never downloaded) for `kind: text` sources."""

    kind: Literal["bert", "gpt2"] = Field(description="WordPiece (vocab.txt) or GPT-2 BPE.")
    vocab_file: str = Field(description="bert: vocab.txt; gpt2: vocab.json.")
    merges_file: str | None = Field(None, description="gpt2: merges.txt.")
    max_length: int | None = Field(None, ge=1, description="Truncate to this many tokens.")


class SourceConfig(_Strict):
    """Where the samples come from."""

    kind: Literal["numpy", "hf_disk", "hf_files", "text"] = Field(
        description="numpy: flat token .npy + offsets .npy; hf_disk: datasets.load_from_disk; "
        "hf_files: datasets.load_dataset(format, data_files); text: lines or a TSV column, "
        "tokenised with `tokenizer`."
    )
    path: str | None = Field(None, description="hf_disk folder, or the text/TSV file.")
    tokens: str | None = Field(None, description="numpy: flat token ids (.npy).")
    offsets: str | None = Field(None, description="numpy: N + 1 sample offsets (.npy).")
    format: str | None = Field(None, description="hf_files: json, parquet, csv, ...")
    data_files: list[str] | None = Field(None, description="hf_files: the files.")
    split: str = Field("train", description="hf_files: the split.")
    column: str = Field("input_ids", description="Column of token-id lists.")
    text_column: str | None = Field(None, description="text: TSV column (None: one per line).")
    tokenizer: TokenizerConfig | None = None
    limit: int | None = Field(None, ge=1, description="Analyze only the first N samples.")


class AnalyzeConfig(_Strict):
    """The `leantrain analyze` file."""

    source: SourceConfig
    output_dir: str
    metrics: list[str] = Field(default_factory=lambda: ["seqlen"])
    pad_token_id: int | None = None
    batch_size: int = Field(8192, ge=1)
    num_workers: int = Field(1, ge=1)
    max_distinct_values: int = Field(10_000, ge=1)
    num_buckets: int | None = Field(None, ge=1)
    max_seq_len: int | None = Field(None, ge=1)
    vocab_size: int | None = Field(
        None,
        ge=1,
        description="Token ids 0 .. vocab_size − 1 (the token histogram has one more bin); "
        "default: the tokenizer's length for `text` sources. Required for vocab_rarity.",
    )


def _read(path: Path) -> AnalyzeConfig:
    if not path.is_file():
        raise ConfigError(f"{path}: analyze config not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        return AnalyzeConfig.model_validate(data)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: unreadable ({err})") from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None


def _tokenizer(cfg: TokenizerConfig) -> Any:
    from transformers import BertTokenizerFast, GPT2TokenizerFast  # type: ignore[attr-defined]

    # transformers 5 takes `vocab=`/`merges=` paths; `vocab_file=` silently builds an empty vocab
    if cfg.kind == "bert":
        return BertTokenizerFast(vocab=cfg.vocab_file)
    if cfg.merges_file is None:
        raise ConfigError("source.tokenizer.merges_file: required for kind 'gpt2'")
    return GPT2TokenizerFast(vocab=cfg.vocab_file, merges=cfg.merges_file)


def load_source(cfg: SourceConfig) -> tuple[Any, int | None]:
    """The dataset a `SourceConfig` describes, and its tokenizer's vocabulary size (if any)."""
    import datasets

    if cfg.kind == "numpy":
        if not cfg.tokens or not cfg.offsets:
            raise ConfigError("source: kind 'numpy' needs 'tokens' and 'offsets' .npy paths")
        offsets = np.load(cfg.offsets, mmap_mode="r")
        if cfg.limit:
            offsets = np.asarray(offsets[: cfg.limit + 1])
            return ArraySource(np.load(cfg.tokens, mmap_mode="r"), offsets), None
        return ArraySource(cfg.tokens, cfg.offsets), None
    vocab_size = None
    if cfg.kind == "hf_disk":
        ds = datasets.load_from_disk(cfg.path)
    elif cfg.kind == "hf_files":
        ds = datasets.load_dataset(cfg.format, data_files=cfg.data_files, split=cfg.split)
    else:
        if cfg.path is None or cfg.tokenizer is None:
            raise ConfigError("source: kind 'text' needs 'path' and 'tokenizer'")
        with open(cfg.path, encoding="utf-8") as fh:
            if cfg.text_column:
                rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
                texts = [row[cfg.text_column] for row in rows]
            else:
                texts = [line.rstrip("\n") for line in fh if line.strip()]
        if cfg.limit:
            texts = texts[: cfg.limit]
        tok = _tokenizer(cfg.tokenizer)
        kw = {"truncation": True, "max_length": cfg.tokenizer.max_length}
        ids = tok(texts, **kw if cfg.tokenizer.max_length else {})["input_ids"]
        ds = datasets.Dataset.from_dict({cfg.column: ids})
        vocab_size = len(tok)
    if cfg.limit and len(ds) > cfg.limit:
        ds = ds.select(range(cfg.limit))
    return ds, vocab_size


def build(cfg: AnalyzeConfig, *, show_progress: bool = True) -> DataAnalyzer:
    """The `DataAnalyzer` an analyze config describes."""
    dataset, tokenizer_vocab = load_source(cfg.source)
    return DataAnalyzer(
        dataset,
        cfg.output_dir,
        cfg.metrics,
        column=cfg.source.column,
        pad_token_id=cfg.pad_token_id,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        max_distinct_values=cfg.max_distinct_values,
        num_buckets=cfg.num_buckets,
        max_seq_len=cfg.max_seq_len,
        show_progress=show_progress,
        vocab_size=cfg.vocab_size or tokenizer_vocab,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `leantrain analyze`."""
    parser.add_argument("config", type=Path, help="analyze config (YAML or JSON)")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--num-workers", type=int, help="override num_workers (local processes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or summary")


def run(args: argparse.Namespace) -> int:
    """Run the analyzer (locally, or as one rank of a torchrun job)."""
    cfg = _read(args.config)
    if args.output_dir:
        cfg.output_dir = args.output_dir
    if args.num_workers:
        cfg.num_workers = args.num_workers
    world = int(os.environ.get("WORLD_SIZE", "1"))
    analyzer = build(cfg, show_progress=not args.no_progress)
    if world == 1:
        analyzer.run()
    else:
        _run_distributed(analyzer, int(os.environ["RANK"]), world)
    return 0


def _run_distributed(analyzer: DataAnalyzer, rank: int, world: int) -> None:
    """Each rank maps every `world`-th part; rank 0 reduces; barriers between stages."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        if rank == 0:
            analyzer.output_dir.mkdir(parents=True, exist_ok=True)
            analyzer.prepare()
        dist.barrier()
        for stage in STAGES:
            if not analyzer.stage_metrics(stage):
                continue
            analyzer.run_map(stage, rank, world)
            dist.barrier()
            if rank == 0:
                analyzer.run_reduce(stage)
            dist.barrier()
        if rank == 0:
            analyzer.finish()
    finally:
        dist.destroy_process_group()
