"""Language-model text data: token blocks of local texts, a `datasets` set or a folder corpus
(`text_folder`), held-out validation and selection shares, and BERT masking for masked LM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from leantrain.errors import ConfigError
from leantrain.trainer.recipe import DataSpec, Recipe
from leantrain.trainer.task import Batch, TaskData, Transform, stack_samples
from leantrain.trainer.text_folder import folder_streams
from leantrain.trainer.tokenizer import ByteTokenizer, encode_texts, token_fields

__all__ = ["MaskTokens", "TokenBlocks", "language_model_data"]


class TokenBlocks(Dataset):
    """Consecutive non-overlapping blocks of a token stream: sample i is ids[i·S:(i+1)·S]."""

    def __init__(
        self,
        ids: torch.Tensor,
        seq_len: int,
        *,
        wrap: tuple[int, int] | None = None,
        source: str = "data.train",
    ) -> None:
        """`wrap` = (cls, sep) frames each block of seq_len − 2 ids (BERT masked LM); `source`
        names where the ids came from in errors."""
        self.wrap = wrap
        self.body = seq_len - 2 if wrap else seq_len
        n = ids.numel() // self.body
        if n == 0:
            raise ConfigError(
                f"{source}: {ids.numel()} tokens is less than one block of data.seq_len {seq_len}"
            )
        self.ids = ids[: n * self.body].view(n, self.body)

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, i: int) -> Batch:
        x = self.ids[i]
        if self.wrap:
            x = torch.cat([x.new_tensor([self.wrap[0]]), x, x.new_tensor([self.wrap[1]])])
        return {"input_ids": x, "labels": x.clone()}


class MaskTokens:
    """BERT masking: pick `p` of the non-special tokens; 80% [MASK], 10% random, 10% kept."""

    def __init__(self, p: float, mask_id: int, vocab_size: int, special: Sequence[int]) -> None:
        """`special` ids are never picked."""
        self.p, self.mask_id, self.vocab_size = p, mask_id, vocab_size
        self.special = torch.tensor(sorted(set(special)))

    def __call__(self, batch: Batch, g: torch.Generator, training: bool) -> Batch:
        """Masked `input_ids` and `labels` (-100 where not picked); draws only from `g`."""
        ids = batch["input_ids"].clone()
        pick = torch.rand(ids.shape, generator=g) < self.p
        pick &= ~torch.isin(ids, self.special)
        labels = torch.where(pick, ids, torch.full_like(ids, -100))
        how = torch.rand(ids.shape, generator=g)
        rand_ids = torch.randint(0, self.vocab_size, ids.shape, generator=g)
        ids = torch.where(pick & (how < 0.8), torch.full_like(ids, self.mask_id), ids)
        ids = torch.where(pick & (how >= 0.8) & (how < 0.9), rand_ids, ids)
        return {**batch, "input_ids": ids, "labels": labels}


def _read_texts(spec: DataSpec, path: str) -> list[tuple[str, str]]:
    """(name, text) of a text file, or of the sorted files matching `glob` in a folder."""
    p = spec.resolve(path)
    files = sorted(p.glob(spec.glob)) if p.is_dir() else [p]
    if not files:
        raise ConfigError(f"data.glob: no files match '{spec.glob}' in {p}")
    return [(f.name, f.read_text(encoding="utf-8", errors="replace")) for f in files]


def _token_stream(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """All texts tokenised line by line and concatenated into one id tensor."""
    lines = [line for text in texts for line in text.splitlines(keepends=True)]
    if isinstance(tokenizer, ByteTokenizer):
        return torch.from_numpy(
            np.frombuffer("".join(lines).encode("utf-8"), np.uint8).copy()
        ).long()
    out: list[int] = []
    for start in range(0, len(lines), 10_000):
        for ids in encode_texts(tokenizer, lines[start : start + 10_000]):
            out.extend(ids)
    return torch.tensor(out, dtype=torch.long)


def _lm_texts(spec: DataSpec, split: str = "validation") -> tuple[list[str], list[str]]:
    """Training texts and the held-out texts of `split` ("validation" or "selection"): a
    `datasets` dataset, given files, or held-out shares of `train` (whole files when it is a
    folder; the selection share is disjoint from validation and never trained on)."""
    if spec.dataset is not None:
        import datasets

        ds = datasets.load_dataset(spec.dataset, spec.dataset_config)
        valid_split = "validation" if "validation" in ds else "test"
        return list(ds["train"][spec.text_column]), list(ds[valid_split][spec.text_column])
    assert spec.train is not None  # the recipe schema requires train or dataset
    train = _read_texts(spec, spec.train)
    given = [t for _, t in _read_texts(spec, spec.valid)] if spec.valid is not None else None
    shares = {"validation": 0.0 if given is not None else spec.valid_fraction}
    shares["selection"] = spec.selection_fraction or 0.0
    if len(train) > 1:  # hold out whole files, spread over the sorted list
        held: dict[str, list[int]] = {}
        taken: set[int] = set()
        for name, share in shares.items():
            if share > 0:
                every = max(2, round(1 / share))
                # validation takes the last file of every block of `every`, selection the middle
                offset = every - 1 if name == "validation" else every // 2 - 1
                held[name] = [
                    i for i in range(len(train)) if i % every == offset and i not in taken
                ]
                taken.update(held[name])
        kept = [t for i, (_, t) in enumerate(train) if i not in taken]
        parts = {name: [train[i][1] for i in ids] for name, ids in held.items()}
    else:  # one text: validation is its tail, selection the part before it
        text = train[0][1]
        end, parts = len(text), {}
        for name, share in shares.items():
            if share > 0:
                cut = len(text) * (1 - share) if end == len(text) else end - len(text) * share
                start = int(cut)
                parts[name], end = [text[start:end]], start
        kept = [text[:end]]
    if given is not None:
        parts["validation"] = given
    return kept, parts.get(split, [])


def _valid_source(spec: DataSpec) -> str:
    """Where the validation text comes from, for errors about it."""
    if spec.dataset is not None:
        return f"data.dataset: the validation split of {spec.dataset}"
    if spec.valid is not None:
        return "data.valid"
    return f"data.valid_fraction: the held-out validation share ({spec.valid_fraction})"


def language_model_data(recipe: Recipe, tokenizer: Any) -> TaskData:
    spec = recipe.data
    if spec.folders is not None:
        streams = [
            torch.from_numpy(s.astype(np.int64))
            for s in folder_streams(spec, tokenizer, recipe.eval.split)
        ]
    else:
        texts = _lm_texts(spec, recipe.eval.split)
        streams = [_token_stream(tokenizer, t) for t in texts]
    wrap = None
    transform: Transform | None = None
    if recipe.task == "masked_lm":
        if isinstance(tokenizer, ByteTokenizer):
            raise ConfigError("data.tokenizer: masked_lm needs 'bert' (a vocabulary with [MASK])")
        wrap = (tokenizer.cls_token_id, tokenizer.sep_token_id)
        transform = MaskTokens(
            spec.mlm_probability,
            tokenizer.mask_token_id,
            len(tokenizer),
            tokenizer.all_special_ids,
        )
    train = TokenBlocks(streams[0], spec.seq_len, wrap=wrap)
    valid = TokenBlocks(streams[1], spec.seq_len, wrap=wrap, source=_valid_source(spec))
    return TaskData(
        train=_subset(train, spec.subset),
        valid=_subset(valid, spec.valid_subset),
        collate_fn=stack_samples,
        model_fields=token_fields(tokenizer),
        transform=transform,
    )


def _subset(ds: TokenBlocks, limit: int | None) -> TokenBlocks:
    """The first `limit` blocks of `ds` (all when None)."""
    if limit is not None and limit < len(ds):
        ds.ids = ds.ids[:limit]
    return ds
