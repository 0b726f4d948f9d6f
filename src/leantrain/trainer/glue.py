"""GLUE tasks from their local TSV folders (or the `datasets` glue set), scored by their
official metrics."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from leantrain.errors import ConfigError
from leantrain.trainer.metrics import glue_metrics
from leantrain.trainer.recipe import DataSpec, Recipe
from leantrain.trainer.task import Batch, TaskData
from leantrain.trainer.tokenizer import ByteTokenizer, token_fields

__all__ = ["GLUE_TASKS", "GlueTask", "PaddedCollate", "Samples", "glue_data"]


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


def glue_data(recipe: Recipe, tokenizer: Any) -> TaskData:
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
        model_fields={**token_fields(tokenizer), "num_labels": task.num_labels},
        score=lambda p, y: glue_metrics(task.metrics, p, y),
        metric_names=task.metrics,
    )
