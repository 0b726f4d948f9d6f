"""The `Technique` protocol: what every technique folder provides so that leantrain composes it.

A technique (PLD, random-LTD, curriculum learning, ...) is one folder: a functional core, a
controller with DeepSpeed's method names, and one adapter class implementing `Technique`
(Composer's `Algorithm` and torchtitan's `apply_*` functions are the models). The adapter

- reads its sections of a config before anything is built (class methods: `enabled`,
  `requirements`, `facts`, `check`, `describe`),
- is built complete from its typed section and what `prepare` knows (`from_config`, `Setup`),
- edits the model (`apply` / `revert`), advances once per optimizer step (`step`), post-processes
  batches or owns their order (`process_batch`, `batch_sampler`), shapes the token accounting
  (`account`), reports `metrics()` and saves `state_dict()`,
- edits a raw config dict for `leantrain compare` (class methods: `enabled_in`, `remove_from`
  for an arm without it, `scale_steps` for a run of another length; `account_logged` reads back
  a finished step's shape from the metrics it logged).

`leantrain.adopt` holds the ordered list of techniques (`TECHNIQUES`) and loops over it;
`prepare`, the handle, the HF callback, the trainer, `leantrain compare` and `leantrain config
check` name no technique. Adding one is a new folder with such an adapter plus one line in that
list (or a call to `leantrain.adopt.register_technique`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from torch import nn
from torch.utils.data import Dataset, Sampler

from leantrain.accounting import StepShape, TokenCounter
from leantrain.config import LeantrainConfig
from leantrain.config.raw import is_on, remove_section
from leantrain.errors import ConfigError, LeantrainError
from leantrain.models import BlockList

__all__ = ["Facts", "Requirements", "Setup", "Technique"]


@dataclass(frozen=True)
class Requirements:
    """What a host training loop must respect while a technique is on."""

    #: It converts blocks of the model: apply before torch.compile, DDP or FSDP.
    converts_model: bool = False
    #: Some parameters get no gradient in a step: DDP needs `find_unused_parameters=True`.
    find_unused_parameters: bool = False
    #: It changes batches: every batch goes through `process_batch` at the step it is used.
    changes_batch: bool = False
    #: It draws the batch order: the host's data loader uses its `batch_sampler`.
    owns_sampler: bool = False

    def __or__(self, other: Requirements) -> Requirements:
        """What two techniques need together."""
        return Requirements(
            **{f.name: getattr(self, f.name) or getattr(other, f.name) for f in fields(self)}
        )


@dataclass(frozen=True)
class Facts:
    """What a technique's config says about the data and the model, for the other techniques
    (`Technique.check`), `prepare` and `config check`. `None` where it says nothing."""

    #: The full (untruncated) sequence length of the data.
    seq_length: int | None = None
    #: The longest sequence length a length curriculum reaches (admits or cuts batches to).
    paced_length: int | None = None
    #: Blocks in the model.
    num_layers: int | None = None

    def __or__(self, other: Facts) -> Facts:
        """Facts of several techniques: the longest lengths, the first layer count."""

        def longest(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else max(a, b)

        return Facts(
            seq_length=longest(self.seq_length, other.seq_length),
            paced_length=longest(self.paced_length, other.paced_length),
            num_layers=self.num_layers if self.num_layers is not None else other.num_layers,
        )


@dataclass(frozen=True)
class Setup:
    """What `prepare` knows when it builds the techniques, so each is complete when built."""

    #: The model's block list: `layers=`, else the registry's first stack (the encoder of an
    #: encoder-decoder). Random-LTD's layer ids and the token accounting count its blocks.
    blocks: BlockList
    rank: int
    world_size: int
    #: Samples per rank per forward (None when not given).
    micro_batch_size: int | None
    gradient_accumulation_steps: int
    #: Samples per optimizer step: micro batch × accumulation × world size, else the config's
    #: `train_batch_size` (None when neither is known).
    global_batch_size: int | None
    train_dataset: Dataset | None
    #: The run's one token counter (written by the handle; techniques may read it).
    counter: TokenCounter
    #: The caller's `layers=` (a block list or its dotted path), or None: techniques that
    #: convert every stack of a model (PLD: encoder and decoder) find them from the registry.
    layers: nn.ModuleList | str | None = None

    def num_samples(self) -> int:
        """The training dataset's length (map-style datasets only: leantrain owns the order)."""
        dataset = self.train_dataset
        if not isinstance(dataset, Sized):
            raise ConfigError(
                f"train_dataset: got {type(dataset).__name__} without __len__; expected a "
                "map-style dataset (leantrain owns the sample order)"
            )
        return len(dataset)


class Technique(ABC):
    """One technique of the composition list: built from its config section, driven by one
    event (`step`), with a versioned state. Hooks a technique does not need keep the defaults."""

    #: Its name: key of its state, of `handle.controllers`, and its metrics' namespace.
    name: ClassVar[str]
    #: Dotted keys of the config sections it reads (`config check` lists the others as unused).
    sections: ClassVar[tuple[str, ...]]
    #: Metric key -> short symbol of the metrics a training loop logs as columns (progress bar).
    columns: ClassVar[Mapping[str, str]] = {}
    #: Dotted key of its LR schedule section, if it can set the LR (`lr_multiplier`).
    lr_schedule_key: ClassVar[str | None] = None
    #: Its short name as an arm of `leantrain compare` (`pld+ltd`); its `name` unless set.
    arm: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Default `arm` to `name`."""
        super().__init_subclass__(**kwargs)
        if "arm" not in vars(cls) and "name" in vars(cls):
            cls.arm = cls.name

    # -- what the config says, before anything is built ----------------------------------------

    @classmethod
    @abstractmethod
    def enabled(cls, config: LeantrainConfig) -> bool:
        """Whether `config` turns this technique on."""

    @classmethod
    def title(cls, config: LeantrainConfig) -> str:
        """Its name in one-line summaries ("PLD", "random-LTD", ...)."""
        return cls.name

    @classmethod
    def requirements(cls, config: LeantrainConfig) -> Requirements:
        """What the host must respect while it is on."""
        return Requirements()

    @classmethod
    def facts(cls, config: LeantrainConfig) -> Facts:
        """What its (enabled) sections say about the data and the model."""
        return Facts()

    @classmethod
    def check(cls, config: LeantrainConfig, facts: Facts) -> None:
        """Raise ConfigError if it cannot compose with the others (`facts` of all enabled)."""
        return None

    @classmethod
    def describe(cls, config: LeantrainConfig, *, num_layers: int, at_step: int) -> list[str]:
        """`config check` lines for each of its sections present in `config`, on or off."""
        return []

    @classmethod
    def schedules_lr(cls, config: LeantrainConfig) -> bool:
        """Whether its LR schedule (`lr_schedule_key`) is on in `config`."""
        return False

    @classmethod
    @abstractmethod
    def from_config(cls, config: LeantrainConfig, setup: Setup) -> Technique:
        """Build it, complete, from its section of `config` (enabled) and `setup`."""

    # -- a raw config dict (`leantrain compare`'s arms, budgets and FLOPs) ----------------------

    @classmethod
    def enabled_in(cls, raw: Mapping[str, Any]) -> bool:
        """Whether a raw config (or recipe) dict turns it on: one of its `sections` is there and
        enabled, as is every section enclosing it."""
        return any(is_on(raw, key) for key in cls.sections)

    @classmethod
    def remove_from(cls, raw: dict[str, Any]) -> None:
        """Remove its sections from a raw config dict in place (an arm without it), and each
        enclosing section left holding no section."""
        for key in cls.sections:
            remove_section(raw, key)

    @classmethod
    def scale_steps(cls, raw: dict[str, Any], factor: float) -> None:
        """Scale its schedules' step-valued settings in a raw config dict by `factor`, in place,
        so they end where they end relative to a run `factor` times as long."""
        return None

    @classmethod
    def account_logged(
        cls, config: LeantrainConfig, row: Mapping[str, float], shape: StepShape
    ) -> None:
        """Shape a finished step as `account` did, from the `metrics()` its run logged (`row`):
        `leantrain compare` counts a run's FLOPs so."""
        return None

    # -- one run -------------------------------------------------------------------------------

    @property
    def controller(self) -> Any:
        """The object users of DeepSpeed know (its controller), or None."""
        return None

    def summary(self) -> str:
        """One line: what it does in this run (start-up summaries)."""
        return self.name

    def apply(self, model: nn.Module) -> None:
        """Convert `model` in place (techniques that edit the model)."""
        return None

    def revert(self, model: nn.Module) -> None:
        """Undo `apply`."""
        return None

    @abstractmethod
    def step(self, global_step: int) -> None:
        """Be at global step `global_step` (optimizer steps taken): called with 0 when the
        handle is made, after each optimizer step, and after a state is loaded."""

    def process_batch(self, batch: Any) -> Any:
        """The batch as this step uses it (techniques that change batches)."""
        return batch

    @property
    def batch_sampler(self) -> Sampler[list[int]] | None:
        """The batch sampler that draws the data order (techniques that own it), or None."""
        return None

    def restart_epoch(self) -> None:
        """Make its batch sampler start over at the current epoch's first batch (for hosts that
        skip a resumed epoch's batches themselves, such as the HF Trainer)."""
        return None

    def account(self, shape: StepShape) -> None:
        """Shape the current step for token accounting (cut, cap or keep; see `StepShape`)."""
        return None

    def metrics(self) -> dict[str, float]:
        """Its current schedule values under `<name>/...` keys."""
        return {}

    def lr_multiplier(self, *, min_ratio: float) -> float | None:
        """LR / peak LR its LR schedule gives now (see `schedules_lr`), or None."""
        return None

    def custom_schedules(self) -> list[str]:
        """Names of its schedules of `schedule_type: custom` (user functions of the step)."""
        return []

    def set_custom_schedule(self, name: str, fn: Callable[[int], float]) -> None:
        """Install `fn` for the custom schedule `name`."""
        raise LeantrainError(f"{self.name}: has no custom schedule {name!r}")

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Its versioned state."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()` (then `step` is called with the restored global step)."""

    @classmethod
    def state_from_v1(cls, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """Its state inside a handle state of version 1 (leantrain 0.1), or None if it was off."""
        return state["controllers"].get(cls.name)
