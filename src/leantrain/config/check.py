"""`leantrain config check FILE`: validate a DeepSpeed config and say what leantrain does with it.

One line per section: whether it is on, what it will do (with the schedule evaluated at a few
steps), and which keys leantrain keeps without using. Exits 2 with the `ConfigError` message on a
bad file, like every leantrain command.
"""

from __future__ import annotations

import argparse
import functools

from leantrain.config.loader import SECTIONS, LeantrainConfig, load_config
from leantrain.config.schema import CurriculumMetricConfig, LegacyCurriculumConfig

__all__ = ["add_arguments", "describe", "run"]

_DE = "data_efficiency"
#: DeepSpeed batch keys that `leantrain.prepare` reads when not given as arguments.
_BATCH_KEYS = {
    "train_micro_batch_size_per_gpu": "read by leantrain.prepare as the default micro batch size",
    "gradient_accumulation_steps": "read by leantrain.prepare as the default accumulation steps",
    "train_batch_size": "read by leantrain.prepare to count tokens when no micro batch is given",
}
_CURRICULUM = f"{_DE}.data_sampling.curriculum_learning"
_RANDOM_LTD = f"{_DE}.data_routing.random_ltd"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `leantrain config check`."""
    parser.add_argument("file", help="DeepSpeed-style config (JSON or YAML)")
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help="blocks in the model, for compute estimates (default: random-LTD's "
        "total_layer_num, else 12)",
    )
    parser.add_argument(
        "--at-step",
        type=int,
        default=1000,
        help="global step at which to evaluate the schedules (default: 1000)",
    )


def run(args: argparse.Namespace) -> int:
    """Validate `args.file`, print one line per section; 0 on success (errors exit 2 via cli)."""
    config = load_config(args.file)
    from leantrain.adopt.compose import check_composition

    check_composition(config)
    for line in describe(config, num_layers=args.layers, at_step=args.at_step):
        print(line)
    return 0


def describe(
    config: LeantrainConfig, *, num_layers: int | None = None, at_step: int = 1000
) -> list[str]:
    """What leantrain will do with each section of `config`, one line per section."""
    if num_layers is None:
        num_layers = config.random_ltd.total_layer_num or 12
    given = config.model_fields_set
    lines: list[str] = []
    if "progressive_layer_drop" in given:
        lines.append(_pld_line(config, num_layers, at_step))
    if "curriculum_learning" in given:
        lines.append(_legacy_curriculum_line(config.curriculum_learning, at_step))
    if _DE in given:
        lines.extend(_data_efficiency_lines(config, num_layers, at_step))
    for key in config.model_extra or {}:
        lines.append(f"{key}: {_BATCH_KEYS.get(key, 'kept, not used by leantrain')}")
    if not lines:
        lines.append("(empty config: leantrain does nothing)")
    lines.append(_summary(config))
    return lines


def _pld_line(config: LeantrainConfig, num_layers: int, at_step: int) -> str:
    section = config.progressive_layer_drop
    if not section.enabled:
        return "progressive_layer_drop: off"
    from leantrain.pld import expected_keep_fraction, pld_theta

    theta_t = pld_theta(at_step, section.theta, section.gamma)
    kept = expected_keep_fraction(num_layers, section.theta)
    return (
        f"progressive_layer_drop: on, θ̄={section.theta:g} γ={section.gamma:g} → "
        f"θ({at_step})={theta_t:.3f}; expected block compute kept at steady state "
        f"{100 * kept:.1f}% for {num_layers} layers (whole blocks skipped, coin seed "
        f"{section.seed})"
    )


def _pacing(section: LegacyCurriculumConfig | CurriculumMetricConfig, at_step: int) -> str:
    """'min → max by <schedule> ...; d(t)=...' for a curriculum schedule."""
    kind = section.schedule_type
    sc = section.schedule_config
    if kind == "custom":
        return (
            "custom schedule: install the function with handle.set_custom_curriculum_schedule(fn)"
        )
    if kind == "fixed_discrete":
        assert sc.difficulty is not None and sc.max_step is not None
        steps = ", ".join(
            f"{d} until step {s}" for d, s in zip(sc.difficulty, sc.max_step, strict=False)
        )
        return f"fixed_discrete: {steps}, then {sc.difficulty[-1]}"
    over = f"over {sc.total_curriculum_step} steps in multiples of {sc.difficulty_step}"
    root = f" (root degree {sc.root_degree})" if kind == "fixed_root" else ""
    out = f"{section.min_difficulty} → {section.max_difficulty} by {kind}{root} {over}"
    return f"{out}; d({at_step})={_difficulty_at(section, at_step)}"


def _difficulty_at(section: LegacyCurriculumConfig | CurriculumMetricConfig, at_step: int) -> int:
    """The curriculum scheduler's difficulty at `at_step`."""
    from leantrain.curriculum import CurriculumScheduler

    scheduler = CurriculumScheduler(section)
    scheduler.update_difficulty(at_step)
    return int(scheduler.get_current_difficulty())


def _legacy_curriculum_line(section: LegacyCurriculumConfig, at_step: int) -> str:
    if not section.enabled:
        return "curriculum_learning: off"
    return (
        "curriculum_learning: on, sequence-length warmup (every batch truncated to the current "
        f"length) {_pacing(section, at_step)}"
    )


def _data_efficiency_lines(config: LeantrainConfig, num_layers: int, at_step: int) -> list[str]:
    de = config.data_efficiency
    sampling = de.data_sampling
    lines = [f"{_DE}: {'on' if de.enabled else 'off'}, seed {de.seed}"]
    cur = sampling.curriculum_learning
    if not config.curriculum_enabled:
        lines.append(f"{_CURRICULUM}: off{_why_off(de.enabled, sampling.enabled, cur.enabled)}")
    else:
        metrics = "; ".join(
            _metric_text(name, metric, at_step) for name, metric in cur.curriculum_metrics.items()
        )
        lines.append(
            f"{_CURRICULUM}: on, batches drawn by leantrain's curriculum sampler; {metrics}"
        )
    if sampling.dynamic_batching.enabled:
        lines.append(f"{_DE}.data_sampling.dynamic_batching: kept, not implemented by leantrain")
    ltd = config.random_ltd
    if not config.random_ltd_enabled:
        routing = de.data_routing.enabled
        lines.append(f"{_RANDOM_LTD}: off{_why_off(de.enabled, routing, ltd.enabled)}")
    else:
        lines.append(_random_ltd_line(config, num_layers, at_step))
    return lines


def _why_off(de: bool, group: bool, section: bool) -> str:
    """' (data_efficiency.enabled is false)' when an enclosing switch turns a section off."""
    if section and not de:
        return f" ({_DE}.enabled is false)"
    if section and not group:
        return " (its enclosing data_sampling/data_routing.enabled is false)"
    return ""


def _metric_text(name: str, metric: CurriculumMetricConfig, at_step: int) -> str:
    if name in ("seqlen_truncate", "seqlen_reshape"):
        how = "truncates" if name == "seqlen_truncate" else "reshapes"
        use = f"{how} every batch to the current length, no index needed"
    elif metric.index_to_sample_path or metric.index_to_metric_path:
        use = f"admits samples by {metric.difficulty_type} from the index {metric.index_to_sample_path}"
    else:
        use = f"admits samples by {metric.difficulty_type}; run `leantrain analyze` to build its index"
    return f"metric {name} ({use}, {metric.clustering_type}): {_pacing(metric, at_step)}"


def _random_ltd_line(config: LeantrainConfig, num_layers: int, at_step: int) -> str:
    from leantrain.random_ltd import reserved_length

    ltd = config.random_ltd
    schedule = ltd.random_ltd_schedule
    assert schedule is not None  # the schema requires it when enabled
    ids = (
        list(ltd.random_ltd_layer_id)
        if ltd.random_ltd_layer_id is not None
        else list(range(1, num_layers - 1))
    )
    params = schedule.schedule_config
    at = functools.partial(
        reserved_length,
        min_value=schedule.min_value,
        max_value=schedule.max_value,
        require_steps=params.require_steps,
        seq_per_step=params.seq_per_step,
    )
    full = schedule.max_value
    start = at(0)
    kept = (start * len(ids) + full * (num_layers - len(ids))) / (full * num_layers)
    lr = ltd.layer_token_lr_schedule
    lr_text = (
        f"; LR by layer-tokens ({lr.warmup_type} warmup {lr.warmup_layer_tokens}, "
        f"total {lr.total_layer_tokens})"
        if lr.enabled
        else ""
    )
    return (
        f"{_RANDOM_LTD}: on, {ltd.model_type or 'model_type from the registry'}, layers "
        f"{_ranges(ids)} ({len(ids)} of {num_layers}) keep r of {full} tokens, r "
        f"{schedule.min_value} → {full} by {schedule.schedule_type} over {params.require_steps} "
        f"steps in multiples of {params.seq_per_step}; r({at_step})={at(at_step)}; layer-tokens "
        f"at step 0: {100 * kept:.1f}% of full{lr_text}"
    )


def _ranges(ids: list[int]) -> str:
    """'[1..10]' for consecutive ids, else the list."""
    if ids and ids == list(range(ids[0], ids[-1] + 1)) and len(ids) > 2:
        return f"[{ids[0]}..{ids[-1]}]"
    return str(ids)


def _summary(config: LeantrainConfig) -> str:
    """Which techniques `leantrain.prepare` applies, in order."""
    on = [
        name
        for name, enabled in (
            ("random-LTD", config.random_ltd_enabled),
            ("PLD", config.pld_enabled),
            ("sequence-length warmup", config.seqlen_warmup_enabled),
            ("curriculum sampling", config.curriculum_enabled),
        )
        if enabled
    ]
    if not on:
        return f"leantrain: nothing enabled (sections read: {', '.join(SECTIONS)})"
    return f"leantrain.prepare will apply: {', '.join(on)} (surgery order: random-LTD, then PLD)"
