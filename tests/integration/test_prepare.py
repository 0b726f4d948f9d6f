"""`leantrain.prepare` composes PLD, curriculum learning and random-LTD on tiny real models."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from conftest import MODEL_FACTORIES, SEQ, make_inputs
from torch import nn
from torch.utils.data import Dataset

import leantrain
from leantrain.accounting import step_tokens
from leantrain.adopt import ShuffledBatchSampler
from leantrain.curriculum import CurriculumSampler
from leantrain.curriculum.scheduler import difficulty_at
from leantrain.errors import ConfigError, LeantrainError
from leantrain.pld import layer_keep_probs, pld_theta
from leantrain.random_ltd import layer_token_lr_multiplier, reserved_length
from leantrain.surgery import SurgeryError, conversions

NUM_LAYERS = 4
MICRO, ACCUM = 2, 2


PACING = {
    "min_difficulty": 8,
    "max_difficulty": SEQ,
    "schedule_type": "fixed_linear",
    "schedule_config": {"total_curriculum_step": 4, "difficulty_step": 4},
}


def all_three(curriculum: str = "legacy", **overrides: Any) -> dict[str, Any]:
    """A DeepSpeed-style config with PLD, a sequence-length curriculum and random-LTD (SEQ=16).

    `curriculum`: "legacy" (top-level `curriculum_learning` seqlen warmup), "data_efficiency"
    (the curriculum sampler with DeepSpeed's `seqlen_truncate` metric) or "none".
    """
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": MICRO,
        "optimizer": {"type": "Adam", "params": {"lr": 1e-3}},
        "progressive_layer_drop": {"enabled": True, "theta": 0.5, "gamma": 0.1},
        "curriculum_learning": {"enabled": True, "curriculum_type": "seqlen", **PACING},
        "data_efficiency": {
            "enabled": True,
            "seed": 7,
            "data_routing": {
                "enabled": True,
                "random_ltd": {
                    "enabled": True,
                    "random_ltd_layer_id": [1, 2],
                    "random_ltd_schedule": {
                        "min_value": 4,
                        "max_value": SEQ,
                        "schedule_config": {"require_steps": 6, "seq_per_step": 2},
                    },
                },
            },
        },
    }
    if curriculum != "legacy":
        del cfg["curriculum_learning"]
    if curriculum == "data_efficiency":
        metric = {"clustering_type": "single_cluster", **PACING}
        cfg["data_efficiency"]["data_sampling"] = {
            "enabled": True,
            "curriculum_learning": {
                "enabled": True,
                "curriculum_metrics": {"seqlen_truncate": metric},
            },
        }
    cfg.update(overrides)
    return cfg


class TokenDataset(Dataset):
    """Fixed-length random token sequences with a padding mask (dict samples)."""

    def __init__(self, n: int = 24, seed: int = 0) -> None:
        batch = make_inputs("gpt2", batch=n, seq=SEQ, seed=seed)
        self.ids, self.mask = batch["input_ids"], batch["attention_mask"]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i]}


def fresh(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return MODEL_FACTORIES[arch](num_layers=NUM_LAYERS)


def expected(step: int, cfg: dict[str, Any]) -> dict[str, float]:
    """θ, r and d at global step `step` from the pure formulas (d is 1-based, as DeepSpeed's)."""
    de = cfg["data_efficiency"]["data_routing"]["random_ltd"]["random_ltd_schedule"]
    loaded = leantrain.load_config(cfg)
    pacing = (
        loaded.curriculum_learning
        if loaded.seqlen_warmup_enabled
        else loaded.curriculum.curriculum_metrics["seqlen_truncate"]
    )
    return {
        "pld/theta": pld_theta(step, 0.5, 0.1),
        "random_ltd/reserved_length": reserved_length(
            step,
            min_value=de["min_value"],
            max_value=de["max_value"],
            require_steps=6,
            seq_per_step=2,
        ),
        "curriculum/difficulty": difficulty_at(pacing, step + 1),
    }


def train_step(handle: leantrain.LeantrainHandle, batch: dict[str, torch.Tensor]) -> None:
    """One forward/backward on a post-processed batch, then the handle's step."""
    model = handle.model
    model.train()
    inputs = handle.process_batch(dict(batch))
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    model.zero_grad()
    handle.step()


@pytest.mark.parametrize(
    ("arch", "curriculum"),
    [("gpt2", "legacy"), ("gpt2", "data_efficiency"), ("bert", "data_efficiency")],
)
def test_prepare_composes_and_steps_every_schedule(arch: str, curriculum: str) -> None:
    cfg = all_three(curriculum)
    model = fresh(arch)
    handle = leantrain.prepare(
        model, cfg, TokenDataset(), gradient_accumulation_steps=ACCUM, seq_length=SEQ
    )
    assert handle.model is model
    assert list(conversions(model)) == ["random_ltd", "pld"]  # random-LTD inside, PLD outermost
    sampler_type = CurriculumSampler if curriculum == "data_efficiency" else ShuffledBatchSampler
    assert isinstance(handle.batch_sampler, sampler_type)
    batches = iter(handle.dataloader())
    for t in range(8):
        want = expected(t, cfg)
        metrics = handle.metrics()
        for key, value in want.items():
            assert metrics[key] == pytest.approx(value), (t, key)
        batch = next(batches)
        assert batch["input_ids"].shape == (MICRO, want["curriculum/difficulty"])
        assert handle.global_step == t
        train_step(handle, batch)
    assert set(handle.metrics()) == {
        "pld/theta",
        "random_ltd/reserved_length",
        "curriculum/difficulty",
        "tokens/effective_seqlen",
        "tokens/consumed",
        "tokens/layer_tokens",
    }


def test_token_accounting_matches_hand_computation() -> None:
    cfg = all_three()
    handle = leantrain.prepare(
        fresh("gpt2"), cfg, gradient_accumulation_steps=ACCUM, world_size=2, rank=1
    )
    samples = MICRO * ACCUM * 2
    tokens = layer_tokens = 0.0
    for t in range(7):
        want = expected(t, cfg)
        theta, r, d = (
            want["pld/theta"],
            want["random_ltd/reserved_length"],
            want["curriculum/difficulty"],
        )
        probs = layer_keep_probs(NUM_LAYERS, theta)
        # by hand: blocks 1 and 2 see min(r, d) tokens, blocks 0 and 3 see d, each kept with p_i
        per_sample = sum(p * (min(r, d) if i in (1, 2) else d) for i, p in enumerate(probs))
        eff = d if r >= d else (d * 2 + r * 2) // 4
        got = handle.step()
        assert got.effective == eff
        assert got.tokens == samples * eff
        assert got.layer_tokens == pytest.approx(samples * per_sample)
        tokens += samples * eff
        layer_tokens += samples * per_sample
    metrics = handle.metrics()
    assert metrics["tokens/consumed"] == tokens
    assert metrics["tokens/layer_tokens"] == pytest.approx(layer_tokens)
    want = expected(7, cfg)
    assert (
        metrics["tokens/effective_seqlen"]
        == step_tokens(
            1,
            SEQ,
            num_layers=NUM_LAYERS,
            curriculum_seqlen=int(want["curriculum/difficulty"]),
            ltd_layer_ids=[1, 2],
            reserved_length=int(want["random_ltd/reserved_length"]),
        ).effective
    )


@pytest.mark.parametrize("curriculum", ["legacy", "data_efficiency"])
def test_state_dict_round_trip_gives_identical_following_metrics(curriculum: str) -> None:
    cfg = all_three(curriculum)
    data = TokenDataset()
    a = leantrain.prepare(fresh("gpt2"), cfg, data, gradient_accumulation_steps=1, seq_length=SEQ)
    loader = iter(a.dataloader())
    for _ in range(3):
        train_step(a, next(loader))
    state = copy.deepcopy(a.state_dict())
    b = leantrain.prepare(fresh("gpt2"), cfg, data, gradient_accumulation_steps=1, seq_length=SEQ)
    b.load_state_dict(state)
    assert b.global_step == a.global_step == 3
    assert b.metrics() == a.metrics()
    # the data order continues where it stopped
    next_a, next_b = next(loader), next(iter(b.dataloader()))
    torch.testing.assert_close(next_a, next_b)
    for _ in range(3):
        a.step()
        b.step()
        assert b.metrics() == a.metrics()


def test_state_dict_refuses_other_techniques_and_versions() -> None:
    a = leantrain.prepare(fresh("gpt2"), all_three())
    cfg = all_three(progressive_layer_drop={"enabled": False})
    b = leantrain.prepare(fresh("gpt2"), cfg)
    with pytest.raises(LeantrainError, match="techniques"):
        b.load_state_dict(a.state_dict())
    with pytest.raises(LeantrainError, match="version"):
        a.load_state_dict({**a.state_dict(), "version": 99})


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_revert_gives_the_plain_model(arch: str) -> None:
    plain = fresh(arch)
    model = copy.deepcopy(plain)
    handle = leantrain.prepare(model, all_three(), TokenDataset(), seq_length=SEQ)
    keys = list(plain.state_dict())
    assert list(handle.plain_state_dict()) == keys  # surgery keeps the checkpoint format
    loader = iter(handle.dataloader())
    for _ in range(2):
        train_step(handle, next(loader))  # no optimizer: parameters unchanged
    back = handle.revert()
    assert back is model
    assert conversions(back) == {}
    assert type(back) is type(plain)
    assert all(type(a) is type(b) for a, b in zip(back.modules(), plain.modules(), strict=True))
    assert list(back.state_dict()) == keys
    inputs = make_inputs(arch, batch=3, seq=SEQ)
    back.eval()
    with torch.no_grad():
        torch.testing.assert_close(back(**inputs).logits, plain(**inputs).logits)


def test_disabled_techniques_do_nothing() -> None:
    model = fresh("gpt2")
    handle = leantrain.prepare(model, {"optimizer": {"type": "Adam"}}, seq_length=SEQ)
    assert conversions(model) == {}
    assert set(handle.metrics()) == {
        "tokens/effective_seqlen",
        "tokens/consumed",
        "tokens/layer_tokens",
    }
    batch = make_inputs("gpt2")
    assert handle.process_batch(batch) is batch
    assert handle.revert() is model


@pytest.mark.parametrize("metric", ["seqlen", "seqlen_truncate"])
def test_incompatible_mix_rejected_before_surgery(metric: str) -> None:
    cfg = all_three("data_efficiency")
    metrics = cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]
    metrics[metric] = metrics.pop("seqlen_truncate")
    cfg["curriculum_learning"] = all_three("legacy")["curriculum_learning"]
    model = fresh("gpt2")
    with pytest.raises(ConfigError, match=f"curriculum_metrics.{metric}'; both pace"):
        leantrain.prepare(model, cfg, TokenDataset())
    assert conversions(model) == {}


def test_random_ltd_max_value_below_curriculum_length_rejected() -> None:
    cfg = all_three()
    cfg["curriculum_learning"]["max_difficulty"] = 32
    with pytest.raises(ConfigError, match="max_value"):
        leantrain.prepare(fresh("gpt2"), cfg)


def test_wrapped_model_refused_and_failed_surgery_undone() -> None:
    model = fresh("gpt2")
    with pytest.raises(SurgeryError, match="torch.compile"):
        leantrain.prepare(torch.compile(model), all_three())
    # PLD fails after random-LTD converted: random-LTD is undone
    bad = fresh("gpt2")
    with pytest.raises(LeantrainError):
        leantrain.prepare(bad, all_three(), layers="transformer.wte")
    assert conversions(bad) == {}


def test_shuffled_sampler_ranks_are_disjoint_and_resume_by_step() -> None:
    cfg = {"data_efficiency": {"seed": 3}}
    data = TokenDataset(n=20)
    seen = []
    for rank in range(2):
        handle = leantrain.prepare(
            fresh("gpt2"), cfg, data, micro_batch_size=2, rank=rank, world_size=2
        )
        seen.append([i for batch in handle.batch_sampler for i in batch])
    assert len(seen[0]) == len(seen[1]) == 10
    assert not set(seen[0]) & set(seen[1])
    # position follows the step count: after 2 steps of 2 micro-batches, the 5th batch comes next
    handle = leantrain.prepare(
        fresh("gpt2"), cfg, data, micro_batch_size=2, gradient_accumulation_steps=2
    )
    first = list(handle.batch_sampler)
    handle.step()
    handle.step()
    assert list(handle.batch_sampler) == first[4:]
    for _ in range(3):
        handle.step()  # 10 micro-batches: the next epoch, another order
    again = list(handle.batch_sampler)
    assert len(again) == len(first) and again != first


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # on 1 CPU
def test_dataloader_workers_get_the_length_of_the_consuming_step() -> None:
    cfg = all_three("data_efficiency")
    handle = leantrain.prepare(fresh("gpt2"), cfg, TokenDataset(), gradient_accumulation_steps=1)
    # workers collate ahead; the cut happens where the loop consumes the batch
    for t, batch in zip(range(5), handle.dataloader(num_workers=2), strict=False):
        assert batch["input_ids"].shape[1] == expected(t, cfg)["curriculum/difficulty"]
        handle.step()


@pytest.mark.parametrize("arch", ["llama", "vit"])
def test_prepare_other_families(arch: str) -> None:
    """PLD + random-LTD on rotary (Llama) and image (ViT, 16 patches + CLS) models."""
    full = 17 if arch == "vit" else SEQ
    cfg = all_three(curriculum="none")
    schedule = cfg["data_efficiency"]["data_routing"]["random_ltd"]["random_ltd_schedule"]
    schedule.update(max_value=full, schedule_config={"require_steps": 2, "seq_per_step": 1})
    plain = fresh(arch)
    model = copy.deepcopy(plain)
    handle = leantrain.prepare(model, cfg, micro_batch_size=3)
    assert handle.seq_length == full
    model.train()
    inputs = make_inputs(arch, batch=3)
    for t in range(3):
        out = model(**inputs)
        out.logits.float().pow(2).mean().backward()
        assert handle.step().tokens == 3 * expected_effective(t, full)
    handle.revert().eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, plain(**inputs).logits)


def expected_effective(step: int, full: int) -> int:
    """Effective length of `test_prepare_other_families`: r = 4 -> full over 2 steps, 2 of 4."""
    r = reserved_length(step, min_value=4, max_value=full, require_steps=2, seq_per_step=1)
    return full if r >= full else (full * 2 + r * 2) // 4


def test_shuffled_batches_never_repeat_across_an_epoch_that_ends_mid_step() -> None:
    """6 samples, micro-batch 2, accumulation 2: an epoch holds one whole step, not 1.5."""
    steps = [0]
    sampler = ShuffledBatchSampler(
        6, micro_batch_size=2, steps=lambda: steps[0], gradient_accumulation_steps=2, seed=7
    )
    assert len(sampler) == 2
    seen: list[list[int]] = []
    for _ in range(3):  # the trainer's pattern: a fresh iterator at each epoch end
        for i, batch in enumerate(sampler):
            seen.append(batch)
            if i % 2 == 1:
                steps[0] += 1
    per_step = [seen[i] + seen[i + 1] for i in range(0, len(seen), 2)]
    assert all(len(set(s)) == 4 for s in per_step), "a step saw a sample twice"
    assert len(per_step) == 3


def test_random_ltd_counts_with_the_real_global_batch_and_warns_once() -> None:
    """DeepSpeed's engine counts layer-tokens with the real global batch; a configured
    `global_batch_size` that disagrees is replaced by it, with one warning."""
    cfg = all_three(curriculum="none")
    cfg["data_efficiency"]["data_routing"]["random_ltd"]["global_batch_size"] = 64
    with pytest.warns(UserWarning, match="global_batch_size: got 64 .* takes 8 samples") as caught:
        handle = leantrain.prepare(
            fresh("gpt2"), cfg, gradient_accumulation_steps=ACCUM, world_size=2, seq_length=SEQ
        )
    assert len(caught) == 1
    ltd = handle.controllers["random_ltd"]
    assert ltd.global_batch_size == MICRO * ACCUM * 2 == 8
    assert ltd.layer_tokens_per_step(4) == 8 * (4 * 2 + SEQ * 2)
    for _ in range(3):
        handle.step()  # no further warning (warnings are errors here)
    cfg["data_efficiency"]["data_routing"]["random_ltd"]["global_batch_size"] = 8
    leantrain.prepare(fresh("gpt2"), cfg, gradient_accumulation_steps=ACCUM, world_size=2)


def test_one_layer_token_count_drives_the_lr_schedule_and_the_metrics() -> None:
    """`LayerTokenLRScheduler` on the handle's random-LTD scheduler reads the handle's count
    (PLD's skipped blocks and the curriculum's lengths included), not a second one."""
    cfg = all_three()
    ltd_cfg = cfg["data_efficiency"]["data_routing"]["random_ltd"]
    ltd_cfg["layer_token_lr_schedule"] = {"enabled": True, "total_layer_tokens": 4000}
    handle = leantrain.prepare(
        fresh("gpt2"), cfg, gradient_accumulation_steps=ACCUM, seq_length=SEQ
    )
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    lr = leantrain.LayerTokenLRScheduler(opt, handle.controllers["random_ltd"])
    for _ in range(5):
        handle.step()
        opt.step()
        lr.step()
        consumed = handle.metrics()["tokens/layer_tokens"]
        assert handle.controllers["random_ltd"].consumed_layer_tokens == int(consumed)
        want = layer_token_lr_multiplier(int(consumed), total_layer_tokens=4000)
        assert opt.param_groups[0]["lr"] == pytest.approx(want)
        assert handle.lr_multiplier() == pytest.approx(want)
    assert 0 < consumed < 5 * MICRO * ACCUM * SEQ * NUM_LAYERS  # fewer than without techniques


def test_a_custom_schedule_is_installed_once_for_the_handle_and_the_sampler() -> None:
    cfg = all_three("data_efficiency")
    metric = cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]
    metric["seqlen_truncate"] = {"clustering_type": "single_cluster", "schedule_type": "custom"}
    handle = leantrain.prepare(fresh("gpt2"), cfg, TokenDataset(), gradient_accumulation_steps=1)
    with pytest.raises(LeantrainError, match="set_custom_curriculum_schedule"):
        handle.metrics()
    with pytest.raises(ConfigError, match="are \\['seqlen_truncate'\\]; name exactly one"):
        handle.set_custom_curriculum_schedule(lambda step: 8, metric="seqlen")
    handle.set_custom_curriculum_schedule(lambda step: min(4 + 2 * step, SEQ))
    # the sampler draws with the same function: no second installation
    for t, batch in zip(range(4), handle.dataloader(), strict=False):
        assert handle.metrics()["curriculum/difficulty"] == min(4 + 2 * (t + 1), SEQ)
        assert batch["input_ids"].shape == (MICRO, min(4 + 2 * (t + 1), SEQ))
        handle.step()
