"""Token accounting of a step (SPEC.md §4) against hand computation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leantrain.accounting import effective_seqlen, layer_tokens_per_sample, step_tokens


def test_effective_seqlen_megatron_examples() -> None:
    # no technique: the full length
    assert effective_seqlen(1024) == 1024
    # curriculum only: its length
    assert effective_seqlen(1024, curriculum_seqlen=256) == 256
    # random-LTD only, GPT-2 reference config: 10 of 12 layers keep r=128 of 1024 tokens
    assert (
        effective_seqlen(1024, reserved_length=128, num_layers=12, ltd_layers=10)
        == (1024 * 2 + 128 * 10) // 12
    )
    # both: random-LTD applies to the curriculum length
    assert (
        effective_seqlen(
            1024, curriculum_seqlen=512, reserved_length=128, num_layers=12, ltd_layers=10
        )
        == (512 * 2 + 128 * 10) // 12
    )
    # random-LTD does nothing while the curriculum length is <= r
    assert (
        effective_seqlen(
            1024, curriculum_seqlen=64, reserved_length=128, num_layers=12, ltd_layers=10
        )
        == 64
    )


def test_effective_seqlen_rejects_bad_layer_counts() -> None:
    with pytest.raises(ValueError, match="ltd_layers"):
        effective_seqlen(16, reserved_length=8, num_layers=4, ltd_layers=5)


def test_layer_tokens_reference_formula() -> None:
    # SPEC.md §3: global_batch × (r × L_ltd + max × (L − L_ltd)), no curriculum, no PLD
    got = step_tokens(4, 1024, num_layers=12, ltd_layer_ids=range(1, 11), reserved_length=128)
    assert got.layer_tokens == 4 * (128 * 10 + 1024 * 2)
    assert got.effective == (1024 * 2 + 128 * 10) // 12
    assert got.tokens == 4 * got.effective


def test_layer_tokens_vit_published_count() -> None:
    # SPEC.md §3: ViT on CIFAR, layers 1-10 of 12, 197 tokens, min 32 -> max 197 over 3910 steps,
    # batch 32, 14 epochs... per step the count is batch × (r·10 + 197·2); check one step by hand.
    got = step_tokens(32, 197, num_layers=12, ltd_layer_ids=range(1, 11), reserved_length=32)
    assert got.layer_tokens == 32 * (32 * 10 + 197 * 2)


def test_pld_skipped_layers_not_counted() -> None:
    # 4 layers, keep probabilities p_l = 1 - (l/L)(1 - θ) with θ = 0.5, 1-based l
    theta, num_layers = 0.5, 4
    probs = [1 - (i / num_layers) * (1 - theta) for i in range(1, num_layers + 1)]
    got = layer_tokens_per_sample(16, num_layers=4, keep_probs=probs)
    assert got == pytest.approx(16 * sum(probs))
    # with random-LTD on layers 1 and 2 keeping 8 tokens
    got = layer_tokens_per_sample(
        16, num_layers=4, ltd_layer_ids=[1, 2], reserved_length=8, keep_probs=probs
    )
    assert got == pytest.approx(16 * probs[0] + 8 * probs[1] + 8 * probs[2] + 16 * probs[3])


def test_keep_probs_length_checked() -> None:
    with pytest.raises(ValueError, match="one per layer"):
        layer_tokens_per_sample(16, num_layers=4, keep_probs=[1.0, 1.0])
    with pytest.raises(ValueError, match="ltd_layer_ids"):
        layer_tokens_per_sample(16, num_layers=4, ltd_layer_ids=[4], reserved_length=8)


@given(
    seq=st.integers(1, 4096),
    cur=st.one_of(st.none(), st.integers(1, 4096)),
    r=st.one_of(st.none(), st.integers(1, 4096)),
    num_layers=st.integers(1, 48),
    data=st.data(),
)
def test_effective_seqlen_properties(
    seq: int, cur: int | None, r: int | None, num_layers: int, data: st.DataObject
) -> None:
    ltd = data.draw(st.integers(0, num_layers))
    eff = effective_seqlen(
        seq, curriculum_seqlen=cur, reserved_length=r, num_layers=num_layers, ltd_layers=ltd
    )
    actual = seq if cur is None else min(cur, seq)
    # never more than the curriculum length, never less than what the dropping layers keep
    assert eff <= actual
    kept = actual if r is None else min(actual, r)
    assert eff >= kept
    if ltd == 0 or r is None or r >= actual:
        assert eff == actual  # random-LTD off, or it does nothing while actual <= r
    # equals the per-layer token average, floored (no PLD)
    lt = layer_tokens_per_sample(
        actual, num_layers=num_layers, ltd_layer_ids=range(ltd), reserved_length=r
    )
    assert eff == int(lt) // num_layers


@given(
    samples=st.integers(0, 64),
    seq=st.integers(1, 2048),
    r=st.integers(1, 2048),
    theta=st.floats(0.05, 1.0),
)
def test_step_tokens_scale_with_samples(samples: int, seq: int, r: int, theta: float) -> None:
    probs = [1 - (i / 6) * (1 - theta) for i in range(1, 7)]
    one = step_tokens(
        1, seq, num_layers=6, ltd_layer_ids=[1, 2, 3], reserved_length=r, keep_probs=probs
    )
    many = step_tokens(
        samples, seq, num_layers=6, ltd_layer_ids=[1, 2, 3], reserved_length=r, keep_probs=probs
    )
    assert many.effective == one.effective
    assert many.tokens == samples * one.tokens
    assert many.layer_tokens == pytest.approx(samples * one.layer_tokens)
    # PLD only removes work
    full = step_tokens(samples, seq, num_layers=6, ltd_layer_ids=[1, 2, 3], reserved_length=r)
    assert many.layer_tokens <= full.layer_tokens + 1e-6


@given(
    micro=st.integers(1, 6),
    micro_batches=st.integers(1, 4),
    seq=st.integers(2, 40),
    data=st.data(),
)
def test_fold_counts_the_rows_reshape_batch_makes(
    micro: int, micro_batches: int, seq: int, data: st.DataObject
) -> None:
    """A fold counts exactly the rows `reshape_batch` gives each micro-batch, tail rows included."""
    import torch

    from leantrain.accounting import StepShape
    from leantrain.curriculum import reshape_batch

    length = data.draw(st.integers(1, seq))
    shape = StepShape(micro * micro_batches, seq, 2, micro_batches=micro_batches)
    shape.cut(length, fold=True)
    rows = reshape_batch({"input_ids": torch.zeros(micro, seq, dtype=torch.long)}, length)
    assert shape.samples == micro_batches * rows["input_ids"].shape[0]
    assert shape.seq_length == length
