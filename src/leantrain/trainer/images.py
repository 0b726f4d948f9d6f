"""CIFAR-10 from its JPEG zip: uint8 images, flip augmentation and normalisation per batch."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from leantrain.errors import ConfigError
from leantrain.trainer.metrics import glue_metrics
from leantrain.trainer.recipe import Recipe
from leantrain.trainer.task import Batch, TaskData, Transform, stack_samples

__all__ = ["ImageDataset", "cifar_data"]


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


def cifar_data(recipe: Recipe) -> TaskData:
    spec = recipe.data
    if spec.train is None:
        raise ConfigError("data.train: image_classification reads the CIFAR-10 JPEG zip")
    path = spec.resolve(spec.train)
    return TaskData(
        train=_read_cifar(path, "train", spec.subset),
        valid=_read_cifar(path, "test", spec.valid_subset),
        collate_fn=stack_samples,
        model_fields={"num_labels": 10, "image_size": spec.image_size},
        transform=_image_transform(spec.image_size),
        score=lambda p, y: glue_metrics(("accuracy",), p, y),
        metric_names=("accuracy",),
    )
