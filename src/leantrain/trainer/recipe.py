"""The schema of a training recipe (YAML): what to train, on what, and how.

A recipe holds the trainer's own sections (`model`, `task`, `data`, `optim`, `eval`, ...) next
to DeepSpeed's technique sections (`progressive_layer_drop`, `curriculum_learning`,
`data_efficiency`) at the top level, so the technique part of a DeepSpeed config pastes in
unchanged. Every key is validated on load; errors name the file, the dotted key and the fix.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from leantrain.adopt.compose import TECHNIQUES, config_keys, enabled_techniques
from leantrain.config import LeantrainConfig, load_config
from leantrain.config.loader import describe_error
from leantrain.errors import ConfigError
from leantrain.models import registered_model_types
from leantrain.trainer.text_folder import FolderCorpus
from leantrain.trainer.trackers import missing_package

__all__ = [
    "DATA_ROOT_ENV",
    "DataSpec",
    "EvalSpec",
    "ModelSpec",
    "OptimSpec",
    "Recipe",
    "apply_overrides",
    "load_recipe",
    "recipe_from_dict",
]

#: Environment variable that overrides every recipe's `data.root`.
DATA_ROOT_ENV = "LEANTRAIN_DATA_ROOT"

_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")

Task = Literal["causal_lm", "masked_lm", "sequence_classification", "image_classification"]
GlueTask = Literal["sst2", "mrpc", "rte", "cola", "stsb"]
_LM_TASKS = ("causal_lm", "masked_lm")
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(_Spec):
    """`model`: a Hugging Face family built in-process from config fields, or a local checkpoint."""

    family: str | None = Field(
        default=None, description="HF model_type built from `config` (gpt2, bert, llama, vit, ...)."
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="HF config fields of the model (size, dropout, ...)."
    )
    pretrained: str | None = Field(
        default=None, description="Local `from_pretrained` folder; wins over `family` when given."
    )
    attn_implementation: str | None = Field(
        default=None,
        description="HF attention kernel (sdpa, eager); default: the model's own (sdpa where "
        "the family has it, else eager).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if self.family is None and self.pretrained is None:
            raise ValueError("family: required unless model.pretrained is given")
        known = registered_model_types()
        if self.family is not None and self.family not in known:
            near = difflib.get_close_matches(self.family, known, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise ValueError(
                f"model.family: got {self.family!r}; {hint}expected a model type leantrain knows "
                f"the blocks of: {', '.join(known)}"
            )
        return self


class DataSpec(_Spec):
    """`data`: local files (relative to `root`) or a `datasets` name, and how to tokenise them."""

    root: str = Field(
        default="../shared/data",
        description=f"Base folder of relative data paths (env {DATA_ROOT_ENV} overrides).",
    )
    train: str | None = Field(
        default=None,
        description="Training data: a text file, a folder of text files, a GLUE task folder, "
        "or the CIFAR-10 JPEG zip.",
    )
    valid: str | None = Field(
        default=None, description="Validation text file(s); default: hold out `valid_fraction`."
    )
    folders: FolderCorpus | None = Field(
        default=None,
        description="Language-model text from files under folders, split by file and tokenised "
        "once into a cache (instead of `train`; see leantrain.trainer.text_folder).",
    )
    glob: str = Field(
        default="*.txt", description="Files to read when `train` is a folder of text."
    )
    valid_fraction: float = Field(
        default=0.05,
        gt=0.0,
        lt=1.0,
        description="Share held out for validation when `valid` is unset.",
    )
    selection_fraction: float | None = Field(
        default=None,
        gt=0.0,
        lt=0.5,
        description="A second held-out share, disjoint from validation and never trained on, "
        "for choosing settings (`eval.split: selection`) so the reported split stays unseen.",
    )
    dataset: str | None = Field(
        default=None, description="A Hugging Face `datasets` name instead of local files."
    )
    dataset_config: str | None = Field(
        default=None, description="The `datasets` configuration name."
    )
    text_column: str = Field(default="text", description="Text column of a `datasets` dataset.")
    tokenizer: Literal["byte", "gpt2", "bert"] = Field(
        default="byte", description="byte (256 ids, needs no files), gpt2 BPE or bert WordPiece."
    )
    tokenizer_path: str | None = Field(
        default=None,
        description="Folder with the tokenizer files (vocab.json+merges.txt / vocab.txt).",
    )
    seq_len: int = Field(
        default=128, ge=8, description="Tokens per sample (language-model blocks)."
    )
    glue_task: GlueTask | None = Field(
        default=None, description="GLUE task of `train` (a TSV folder)."
    )
    mlm_probability: float = Field(default=0.15, gt=0.0, lt=1.0, description="Masked-LM mask rate.")
    subset: int | None = Field(
        default=None, ge=1, description="Use at most this many training samples."
    )
    valid_subset: int | None = Field(
        default=None, ge=1, description="Use at most this many validation samples."
    )
    image_size: int = Field(default=32, ge=8, description="Side of the images fed to the model.")

    def resolve(self, path: str) -> Path:
        """`path` made absolute: relative paths are under `root` (or $LEANTRAIN_DATA_ROOT)."""
        p = Path(path).expanduser()
        if p.is_absolute():
            return p
        return (Path(os.environ.get(DATA_ROOT_ENV, self.root)).expanduser() / p).resolve()


class OptimSpec(_Spec):
    """`optim`: AdamW, the LR schedule, batch sizes, the step budget and the precision."""

    lr: float = Field(default=1e-3, gt=0.0, description="Peak learning rate.")
    min_lr_ratio: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Final LR as a share of `lr`."
    )
    warmup_steps: int = Field(default=0, ge=0, description="Linear LR warmup, in optimizer steps.")
    decay: Literal["cosine", "linear", "constant", "layer_tokens"] = Field(
        default="cosine",
        description="LR decay after warmup; layer_tokens follows random-LTD's "
        "layer_token_lr_schedule.",
    )
    betas: tuple[Beta, Beta] = Field(default=(0.9, 0.999), description="AdamW betas, in [0, 1).")
    eps: float = Field(default=1e-8, gt=0.0, description="AdamW epsilon.")
    weight_decay: float = Field(
        default=0.01, ge=0.0, description="Decoupled weight decay (matrices)."
    )
    grad_clip: float | None = Field(
        default=1.0, gt=0.0, description="Max gradient norm (null: off)."
    )
    micro_batch_size: int = Field(default=8, ge=1, description="Samples per rank per forward pass.")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    max_steps: int = Field(default=100, ge=1, description="Optimizer steps to train.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto", description="auto: bf16 autocast on a GPU that supports it, else fp32."
    )


class EvalSpec(_Spec):
    """`eval`: how often and on how much validation data to evaluate."""

    interval: int = Field(
        default=50, ge=1, description="Evaluate every this many steps (and at the end)."
    )
    max_batches: int | None = Field(
        default=20, ge=1, description="Validation batches per evaluation."
    )
    batch_size: int | None = Field(
        default=None, ge=1, description="Default: optim.micro_batch_size."
    )
    final_whole: bool = Field(
        default=False,
        description="Evaluate the last step on the whole split (not `max_batches`), so its "
        "loss and standard error (eval/loss_se) describe the split.",
    )
    split: Literal["validation", "selection"] = Field(
        default="validation",
        description="Held-out split to evaluate: validation (reported), or the selection split "
        "of data.selection_fraction (for sweeps).",
    )
    stop_at_loss: float | None = Field(
        default=None,
        description="End the run at the first evaluation whose loss is at or below this, "
        "as if it had reached optim.max_steps (the model is saved; the LR schedule still "
        "follows max_steps). For time-to-quality runs.",
    )


class Recipe(_Spec):
    """A whole recipe: the trainer's sections; `config` holds the technique sections."""

    task: Task = Field(..., description="What the model learns.")
    model: ModelSpec
    data: DataSpec = Field(default_factory=DataSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    seed: int = Field(
        default=1234, ge=0, description="Seed of initialisation, data order and dropout."
    )
    output_dir: str = Field(default="runs/default", description="Where logs and checkpoints go.")
    checkpoint_interval: int | None = Field(
        default=None, ge=1, description="Save a checkpoint every this many steps (and at the end)."
    )
    log_interval: int = Field(default=1, ge=1, description="Write metrics every this many steps.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto (CUDA when present, else CPU), cpu or cuda."
    )
    parallel: Literal["ddp", "fsdp"] = Field(
        default="ddp",
        description="Data parallelism under torchrun: DDP, or FSDP2 for large models.",
    )
    num_workers: int = Field(default=0, ge=0, description="DataLoader worker processes.")
    loggers: list[Literal["csv", "tensorboard", "wandb", "mlflow"]] = Field(
        default=["csv", "tensorboard"],
        description="Where metrics go: csv (metrics.csv, always), tensorboard (tb/), wandb, "
        "mlflow (each configured by its own environment variables).",
    )

    _config: LeantrainConfig = PrivateAttr(default_factory=LeantrainConfig)
    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _task_needs(self) -> Recipe:
        d = self.data
        if d.train is None and d.dataset is None and d.folders is None:
            raise ValueError(
                "data.train: required unless data.dataset or data.folders names the data"
            )
        if self.task == "sequence_classification" and d.glue_task is None and d.dataset is None:
            raise ValueError("data.glue_task: required for task sequence_classification")
        if self.eval.split == "selection" and d.selection_fraction is None:
            raise ValueError("eval.split: 'selection' needs data.selection_fraction")
        if d.selection_fraction is not None and (
            d.dataset is not None or self.task not in _LM_TASKS
        ):
            raise ValueError(
                "data.selection_fraction: only for language-model text read from data.train "
                "(not with data.dataset)"
            )
        if self.task == "masked_lm" and d.tokenizer == "gpt2":
            raise ValueError("data.tokenizer: masked_lm needs 'bert' (or 'byte'), got 'gpt2'")
        if d.tokenizer != "byte" and d.tokenizer_path is None and self.model.pretrained is None:
            raise ValueError(f"data.tokenizer_path: required for tokenizer '{d.tokenizer}'")
        return self

    @field_validator("loggers")
    @classmethod
    def _loggers_usable(cls, names: list[str]) -> list[str]:
        if "csv" not in names:
            raise ValueError(
                "loggers: 'csv' is required (leantrain report and --resume read metrics.csv)"
            )
        for name in names:
            if (package := missing_package(name)) is not None:
                raise ValueError(
                    f"loggers: '{name}' needs the {package} package: pip install {package} (or the "
                    "leantrain[loggers] extra)"
                )
        return list(dict.fromkeys(names))

    @property
    def config(self) -> LeantrainConfig:
        """The technique sections (PLD, curriculum, random-LTD) as a validated config."""
        return self._config

    @property
    def source(self) -> Path | None:
        """The YAML file this recipe came from, if any."""
        return self._source

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe: trainer sections plus the technique sections, JSON-ready."""
        return {**self.model_dump(mode="json"), **self._config.to_dict()}


def recipe_from_dict(data: Mapping[str, Any], *, source: str | Path | None = None) -> Recipe:
    """Validate a recipe given as a dict; `source` names the file in error messages."""
    origin = f"{source}: " if source is not None else ""
    data = dict(data)
    sections = {k: data.pop(k) for k in config_keys() if k in data}
    try:
        config = load_config(sections)
    except ConfigError as err:
        raise ConfigError(origin + str(err)) from None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise ConfigError(
            origin + describe_error(err, Recipe, extra_keys=config_keys(), name="recipe")
        ) from None
    recipe._config = config
    if recipe.optim.decay == "layer_tokens" and not any(
        t.schedules_lr(config) for t in enabled_techniques(config)
    ):
        keys = [t.lr_schedule_key for t in TECHNIQUES if t.lr_schedule_key is not None]
        raise ConfigError(
            f"{origin}optim.decay: 'layer_tokens' needs {' or '.join(keys)} enabled (and the "
            "technique it belongs to)"
        )
    recipe._source = Path(source) if source is not None else None
    _check_files(recipe, origin)
    return recipe


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe YAML, apply `key=value` overrides (dotted keys), validate, check files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: got a top-level {type(data).__name__}; expected a mapping")
    return recipe_from_dict(apply_overrides(data, overrides), source=path)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of `data` with each `dotted.key=value` set (values parsed as YAML)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. optim.lr=3e-4")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item}: '{part}' is not a section")
            node = child
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item}: the value is not valid YAML") from None
        if isinstance(value, str) and _FLOAT.match(value):  # YAML 1.1 reads 3e-4 as text
            value = float(value)
        node[parts[-1]] = value
    return out


def _check_files(recipe: Recipe, origin: str) -> None:
    """Missing local data, tokenizer or checkpoint paths are errors naming the key and file."""
    d = recipe.data
    checks = [("data.train", d.train), ("data.valid", d.valid)]
    checks.append(("data.tokenizer_path", d.tokenizer_path))
    for key, value in checks:
        if value is not None and not d.resolve(value).exists():
            raise ConfigError(
                f"{origin}{key}: {d.resolve(value)} not found (relative paths are under "
                f"data.root = {os.environ.get(DATA_ROOT_ENV, d.root)}; set {DATA_ROOT_ENV} or "
                f"--set data.root=DIR)"
            )
    pretrained = recipe.model.pretrained
    if pretrained is not None and not Path(pretrained).expanduser().is_dir():
        raise ConfigError(
            f"{origin}model.pretrained: {pretrained} is not a folder; expected a local "
            "`save_pretrained` folder, such as the `model/` folder a finished `leantrain train` "
            "run writes (or --set model.pretrained=null to build model.family from scratch)"
        )
