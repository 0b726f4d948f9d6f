"""`load_config`: read a DeepSpeed-style config (path or dict) into a validated `LeantrainConfig`."""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leantrain.config.schema import (
    CurriculumLearningConfig,
    DataEfficiencyConfig,
    LegacyCurriculumConfig,
    ProgressiveLayerDropConfig,
    RandomLTDConfig,
)
from leantrain.errors import ConfigError

__all__ = ["SECTIONS", "LeantrainConfig", "describe_error", "load_config"]

#: The top-level sections leantrain reads; every other top-level key is kept untouched.
SECTIONS = ("progressive_layer_drop", "curriculum_learning", "data_efficiency")


class LeantrainConfig(BaseModel):
    """A whole DeepSpeed-style config: the sections leantrain implements, typed and validated,
    and every other top-level key (optimizer, fp16, train_batch_size, ...) kept as given."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    progressive_layer_drop: ProgressiveLayerDropConfig = Field(
        default_factory=lambda: ProgressiveLayerDropConfig()
    )
    curriculum_learning: LegacyCurriculumConfig = Field(
        default_factory=lambda: LegacyCurriculumConfig()
    )
    data_efficiency: DataEfficiencyConfig = Field(default_factory=lambda: DataEfficiencyConfig())

    @property
    def pld_enabled(self) -> bool:
        """Whether progressive layer dropping is on."""
        return self.progressive_layer_drop.enabled

    @property
    def seqlen_warmup_enabled(self) -> bool:
        """Whether the legacy sequence-length warmup (`curriculum_learning`) is on."""
        return self.curriculum_learning.enabled

    @property
    def curriculum(self) -> CurriculumLearningConfig:
        """`data_efficiency.data_sampling.curriculum_learning`."""
        return self.data_efficiency.data_sampling.curriculum_learning

    @property
    def curriculum_enabled(self) -> bool:
        """Whether Data Efficiency curriculum sampling is on (every enclosing switch too)."""
        de = self.data_efficiency
        return de.enabled and de.data_sampling.enabled and self.curriculum.enabled

    @property
    def random_ltd(self) -> RandomLTDConfig:
        """`data_efficiency.data_routing.random_ltd`."""
        return self.data_efficiency.data_routing.random_ltd

    @property
    def random_ltd_enabled(self) -> bool:
        """Whether random-LTD is on (every enclosing switch too)."""
        de = self.data_efficiency
        return de.enabled and de.data_routing.enabled and self.random_ltd.enabled

    def to_dict(self) -> dict[str, Any]:
        """The whole config as a DeepSpeed-style dict: JSON key names, defaults filled in for the
        sections that were given, every other key untouched. Saved beside checkpoints."""
        out: dict[str, Any] = {}
        given = self.model_fields_set
        for key, value in (self.model_extra or {}).items():
            out[key] = copy.deepcopy(value)
        for key in SECTIONS:
            if key in given:
                section: BaseModel = getattr(self, key)
                out[key] = section.model_dump(by_alias=True, exclude_none=True)
        return out


def load_config(source: str | Path | Mapping[str, Any] | LeantrainConfig) -> LeantrainConfig:
    """Read and validate a config from a JSON/YAML path or a dict.

    A whole DeepSpeed config file loads unchanged. Raises `ConfigError` naming the file, the
    dotted key path, the bad value and what was expected.
    """
    if isinstance(source, LeantrainConfig):
        return source
    origin = ""
    if isinstance(source, str | Path):
        origin = f"{source}: "
        data = _read_file(Path(source))
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        raise ConfigError(
            f"config: got {type(source).__name__}; expected a path to a JSON/YAML file or a dict"
        )
    _check_section_names(data, origin)
    try:
        return LeantrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(origin + describe_error(err)) from None


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: got a top-level {type(data).__name__}; expected a mapping of config keys"
        )
    return data


def _check_section_names(data: Mapping[str, Any], origin: str) -> None:
    """Other top-level keys are kept as they are, but a near-miss of a section name is a typo
    that would silently turn a technique off."""
    for key in data:
        if key in SECTIONS:
            continue
        near = difflib.get_close_matches(str(key), SECTIONS, n=1, cutoff=0.85)
        if near:
            raise ConfigError(f"{origin}{key}: unknown section; did you mean '{near[0]}'?")


_KEY_PATH = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.DOTALL)


def describe_error(
    err: ValidationError,
    root: type[BaseModel] = LeantrainConfig,
    prefix: str = "",
    *,
    extra_keys: Sequence[str] = (),
    name: str = "config",
) -> str:
    """One line per problem: `dotted.path: what was wrong; what was expected`.

    `root` is the model that was validated and `prefix` its dotted key in a whole config (a
    section validated alone still names its full key path); `extra_keys` are further valid
    top-level keys (validated elsewhere) for "did you mean"; `name` names the whole document.
    """
    lead = prefix.split(".") if prefix else []
    lines = []
    for problem in err.errors(include_url=False):
        path = [str(p) for p in problem["loc"]]
        kind = problem["type"]
        msg = problem["msg"]
        if kind == "extra_forbidden":
            fields = _field_names_at(root, path[:-1]) + ([] if path[:-1] else list(extra_keys))
            near = difflib.get_close_matches(path[-1], fields, n=1, cutoff=0.6)
            hint = f"; did you mean '{near[0]}'?" if near else f"; expected one of {sorted(fields)}"
            lines.append(f"{'.'.join(lead + path)}: unknown key{hint}")
            continue
        if kind == "missing":
            lines.append(f"{'.'.join(lead + path)}: required key is missing")
            continue
        if kind == "value_error":
            msg = msg.removeprefix("Value error, ")
            nested = _KEY_PATH.match(msg)
            if nested:  # the message names its key: in full, or below the problem's location
                named = nested.group(1).split(".")
                path = named if named[: len(path)] == path else [*path, *named]
                msg = nested.group(2)
            lines.append(f"{'.'.join(lead + path) or name}: {msg}")
            continue
        got = problem.get("input")
        about = _field_description(root, path)
        lines.append(f"{'.'.join(lead + path)}: got {got!r}; expected {_expected(msg)}{about}")
    return "\n".join(lines)


def _expected(msg: str) -> str:
    """Turn pydantic's 'Input should be ...' into the 'expected ...' half of our message."""
    msg = msg.removeprefix("Input should be ").removeprefix("Value error, ")
    return msg[0].lower() + msg[1:] if msg else msg


def _field_description(root: type[BaseModel], path: list[str]) -> str:
    """' (description of the field)' for the field at `path` under `root`, or ''."""
    current: Any = root
    info = None
    for part in path:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            if fields is not None:
                continue  # a dict key such as a metric name
            return ""
        info = fields[part]
        current = _inner_model(info.annotation)
    return f" ({info.description})" if info is not None and info.description else ""


def _field_names_at(model: type[BaseModel], path: list[str]) -> list[str]:
    """The valid keys of the (nested) section at `path`, by their JSON names."""
    current: Any = model
    for part in path:
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return []
        if part in fields:
            current = _inner_model(fields[part].annotation)
        elif isinstance(current, type) and hasattr(current, "model_fields"):
            # a dict value (e.g. curriculum_metrics.<name>): keep the value type
            continue
    names = getattr(current, "model_fields", {})
    return [f.alias or name for name, f in names.items()]


def _inner_model(annotation: Any) -> Any:
    """The pydantic model inside `X | None` or `dict[str, X]` annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
