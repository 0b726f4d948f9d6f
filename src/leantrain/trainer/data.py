"""Datasets of the reference trainer: token blocks, masked LM, GLUE and CIFAR-10, all local.

`build_task_data(recipe)` returns the training and validation sets of a recipe's task with the
collate function, an optional per-batch transform (MLM masking, image augmentation; it draws
from an explicit generator the trainer checkpoints) and the task's official metrics.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from leantrain.errors import ConfigError
from leantrain.trainer.metrics import glue_metrics
from leantrain.trainer.recipe import DataSpec, Recipe
from leantrain.trainer.text_folder import folder_streams

__all__ = [
    "GLUE_TASKS",
    "ByteTokenizer",
    "GlueTask",
    "ImageDataset",
    "MaskTokens",
    "PaddedCollate",
    "Samples",
    "TaskData",
    "TokenBlocks",
    "build_task_data",
    "load_tokenizer",
]


Batch = dict[str, torch.Tensor]
#: (batch, generator, training) -> batch; randomness only from the generator.
Transform = Callable[[Batch, torch.Generator, bool], Batch]


@dataclass
class TaskData:
    """What the loop needs from a task: datasets, batching, and how to score predictions."""

    train: Dataset[Any]
    valid: Dataset[Any] | None
    collate_fn: Callable[[list[Any]], Batch]
    #: Model config fields the data implies (vocab_size, pad/bos/eos ids, num_labels).
    model_fields: dict[str, Any] = field(default_factory=dict)
    transform: Transform | None = None
    #: (predictions, labels) -> metric name -> value; None: the task reports only its loss.
    score: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None
    metric_names: tuple[str, ...] = field(default_factory=tuple)


# -- tokenizers ------------------------------------------------------------------------------


class ByteTokenizer:
    """UTF-8 bytes as token ids (vocabulary 256): needs no files, works on any text."""

    vocab_size = 256
    pad_token_id = 0

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text."""
        return [list(t.encode("utf-8")) for t in texts]


def load_tokenizer(spec: DataSpec, pretrained: str | None = None) -> Any:
    """The recipe's tokenizer, from local files only (never downloaded)."""
    if spec.tokenizer == "byte":
        return ByteTokenizer()
    from transformers import AutoTokenizer, BertTokenizer, GPT2Tokenizer

    if spec.tokenizer_path is None:
        return AutoTokenizer.from_pretrained(pretrained, local_files_only=True)
    # from the folder (vocab.txt / vocab.json + merges.txt): in transformers 5 the constructors'
    # `vocab_file=` keyword is ignored and would leave a 5-token vocabulary
    cls = BertTokenizer if spec.tokenizer == "bert" else GPT2Tokenizer
    tok = cls.from_pretrained(str(spec.resolve(spec.tokenizer_path)), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _token_fields(tokenizer: Any) -> dict[str, Any]:
    """Vocabulary size and special ids a model trained on this tokenizer's output needs."""
    if isinstance(tokenizer, ByteTokenizer):
        return {"vocab_size": 256, "pad_token_id": 0, "bos_token_id": None, "eos_token_id": None}
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    if isinstance(tokenizer, ByteTokenizer):
        return tokenizer.encode(texts)
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


# -- language modelling ----------------------------------------------------------------------


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


def _stack(samples: list[Batch]) -> Batch:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


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
        for ids in _encode(tokenizer, lines[start : start + 10_000]):
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


def _language_model(recipe: Recipe, tokenizer: Any) -> TaskData:
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
        collate_fn=_stack,
        model_fields=_token_fields(tokenizer),
        transform=transform,
    )


# -- GLUE ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlueTask:
    """Where a GLUE task's text and label live in its TSV (and in the `datasets` glue set)."""

    text: tuple[str | int, ...]
    label: str | int
    metrics: tuple[str, ...]
    num_labels: int = 2
    label_map: dict[str, int] | None = None
    header: bool = True
    hf_text: tuple[str, ...] = ("sentence",)


GLUE_TASKS: dict[str, GlueTask] = {
    "sst2": GlueTask(("sentence",), "label", ("accuracy",)),
    "mrpc": GlueTask(
        ("#1 String", "#2 String"),
        "Quality",
        ("accuracy", "f1"),
        hf_text=("sentence1", "sentence2"),
    ),
    "rte": GlueTask(
        ("sentence1", "sentence2"),
        "label",
        ("accuracy",),
        label_map={"entailment": 0, "not_entailment": 1},
        hf_text=("sentence1", "sentence2"),
    ),
    "cola": GlueTask((3,), 1, ("matthews_corr",), header=False),
    "stsb": GlueTask(
        ("sentence1", "sentence2"),
        "score",
        ("pearson", "spearman"),
        num_labels=1,
        hf_text=("sentence1", "sentence2"),
    ),
}


class Samples(Dataset):
    """A list of ready samples as a map-style dataset."""

    def __init__(self, samples: list[dict[str, Any]]) -> None:
        """`samples`: one dict of token lists and a label per sample."""
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.samples[i]


class PaddedCollate:
    """Pad variable-length samples to the longest in the batch, with an attention mask."""

    def __init__(self, pad_id: int) -> None:
        """`pad_id` fills `input_ids`; other sequence keys are padded with 0."""
        self.pad_id = pad_id

    def __call__(self, samples: list[dict[str, Any]]) -> Batch:
        """A batch of [B, S_max] tensors plus `labels` [B]."""
        width = max(len(s["input_ids"]) for s in samples)
        out: Batch = {}
        for key in samples[0]:
            if key == "labels":
                out[key] = torch.tensor([s[key] for s in samples])
                continue
            pad = self.pad_id if key == "input_ids" else 0
            out[key] = torch.tensor([list(s[key]) + [pad] * (width - len(s[key])) for s in samples])
        out["attention_mask"] = torch.tensor(
            [[1] * len(s["input_ids"]) + [0] * (width - len(s["input_ids"])) for s in samples]
        )
        return out


def _glue_split(
    spec: DataSpec, task: GlueTask, split: str
) -> tuple[list[tuple[str, ...]], list[Any]]:
    """(texts, labels) of one split, from the local TSV folder or the `datasets` glue set."""
    if spec.dataset is not None:
        import datasets

        ds = datasets.load_dataset(spec.dataset, spec.dataset_config or spec.glue_task)
        part = ds["train" if split == "train" else "validation"]
        return list(zip(*(part[c] for c in task.hf_text), strict=True)), list(part["label"])
    assert spec.train is not None
    import pandas as pd

    path = spec.resolve(spec.train) / f"{split}.tsv"
    if not path.is_file():
        raise ConfigError(f"data.train: {path} not found (a GLUE task folder has {split}.tsv)")
    df = pd.read_csv(
        path,
        sep="\t",
        quoting=csv.QUOTE_NONE,
        header=0 if task.header else None,
        encoding="utf-8-sig",
        keep_default_na=False,
    )
    texts = list(zip(*(df[c].astype(str).tolist() for c in task.text), strict=True))
    labels = df[task.label].tolist()
    if task.label_map is not None:
        labels = [task.label_map[str(v)] for v in labels]
    elif task.num_labels == 1:
        labels = [float(v) for v in labels]
    else:
        labels = [int(v) for v in labels]
    return texts, labels


def _glue(recipe: Recipe, tokenizer: Any) -> TaskData:
    spec = recipe.data
    assert spec.glue_task is not None
    task = GLUE_TASKS[spec.glue_task]
    sets = []
    for split, limit in (("train", spec.subset), ("dev", spec.valid_subset)):
        texts, labels = _glue_split(spec, task, split)
        texts, labels = texts[:limit], labels[:limit]
        if isinstance(tokenizer, ByteTokenizer):
            enc = [
                {"input_ids": tokenizer.encode(["\n".join(t)])[0][: spec.seq_len]} for t in texts
            ]
        else:
            cols = list(zip(*texts, strict=True))
            out = tokenizer(*cols, truncation=True, max_length=spec.seq_len)
            enc = [{k: out[k][i] for k in out if k != "attention_mask"} for i in range(len(texts))]
        sets.append([{**e, "labels": y} for e, y in zip(enc, labels, strict=True)])
    return TaskData(
        train=Samples(sets[0]),
        valid=Samples(sets[1]),
        collate_fn=PaddedCollate(tokenizer.pad_token_id or 0),
        model_fields={**_token_fields(tokenizer), "num_labels": task.num_labels},
        score=lambda p, y: glue_metrics(task.metrics, p, y),
        metric_names=task.metrics,
    )


# -- CIFAR-10 --------------------------------------------------------------------------------

_MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
_STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


class ImageDataset(Dataset):
    """Images held as uint8 [N, 3, H, W] with integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """`images` uint8 [N, 3, H, W]; `labels` int64 [N]."""
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, i: int) -> Batch:
        return {"pixel_values": self.images[i], "labels": self.labels[i]}


def _read_cifar(zip_path: Path, split: str, limit: int | None) -> ImageDataset:
    """CIFAR-10 `split` from the JPEG zip; `limit` takes an evenly spread subset of the files."""
    from PIL import Image

    with zipfile.ZipFile(zip_path) as z:
        names = sorted(
            n for n in z.namelist() if n.startswith(f"cifar10/{split}/") and n.endswith(".jpg")
        )
        if not names:
            raise ConfigError(f"data.train: {zip_path} has no cifar10/{split}/<class>/*.jpg images")
        classes = sorted({n.split("/")[2] for n in names})
        if limit is not None and limit < len(names):
            names = [names[i] for i in np.linspace(0, len(names) - 1, limit).round().astype(int)]
        images = np.stack(
            [np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB")) for n in names]
        )
    labels = torch.tensor([classes.index(n.split("/")[2]) for n in names])
    return ImageDataset(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels)


def _image_transform(size: int) -> Transform:
    def transform(batch: Batch, g: torch.Generator, training: bool) -> Batch:
        x = batch["pixel_values"].float().div(255)  # [B, 3, H, W]
        if training:
            flip = torch.rand(x.shape[0], generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return {**batch, "pixel_values": (x - _MEAN) / _STD}

    return transform


def _cifar(recipe: Recipe) -> TaskData:
    spec = recipe.data
    if spec.train is None:
        raise ConfigError("data.train: image_classification reads the CIFAR-10 JPEG zip")
    path = spec.resolve(spec.train)
    return TaskData(
        train=_read_cifar(path, "train", spec.subset),
        valid=_read_cifar(path, "test", spec.valid_subset),
        collate_fn=_stack,
        model_fields={"num_labels": 10, "image_size": spec.image_size},
        transform=_image_transform(spec.image_size),
        score=lambda p, y: glue_metrics(("accuracy",), p, y),
        metric_names=("accuracy",),
    )


def _subset(ds: TokenBlocks, limit: int | None) -> TokenBlocks:
    if limit is not None and limit < len(ds):
        ds.ids = ds.ids[:limit]
    return ds


def build_task_data(recipe: Recipe) -> TaskData:
    """The datasets, batching and metrics of `recipe.task`."""
    if recipe.task == "image_classification":
        return _cifar(recipe)
    tokenizer = load_tokenizer(recipe.data, recipe.model.pretrained)
    if recipe.task == "sequence_classification":
        return _glue(recipe, tokenizer)
    return _language_model(recipe, tokenizer)
