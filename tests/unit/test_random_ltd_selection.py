"""Random-LTD token selection and routing: pure functions against naive references."""

from __future__ import annotations

import itertools

import pytest
import torch

from leantrain.random_ltd import (
    RoutingError,
    flat_token_index,
    gather_mask,
    gather_positions,
    gather_tokens,
    random_scores,
    rank_key,
    sample_token_indices,
    scatter_tokens,
    select_tokens,
    token_validity,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _chi_square(counts: torch.Tensor, expected: float) -> float:
    return float(((counts.double() - expected) ** 2 / expected).sum())


def test_indices_sorted_unique_in_range_and_differ_across_samples() -> None:
    idx = sample_token_indices(64, 40, 12, generator=_gen())
    assert idx.shape == (64, 12) and idx.dtype == torch.int64
    assert (idx[:, 1:] > idx[:, :-1]).all()  # sorted and unique
    assert idx.min() >= 0 and idx.max() < 40
    assert len({tuple(row.tolist()) for row in idx}) > 60


def test_each_position_and_pair_is_kept_uniformly() -> None:
    """Over many draws every position is kept with probability r/S and every pair with
    r(r-1)/(S(S-1)), as for a uniform random subset (chi-square, 0.001% false-alarm bounds)."""
    n, seq, r = 20_000, 12, 5
    idx = sample_token_indices(n, seq, r, generator=_gen(1))
    kept = torch.zeros(n, seq).scatter_(1, idx, 1.0)  # [N, S] membership
    counts = kept.sum(0)
    assert _chi_square(counts, n * r / seq) < 45.0  # df 11
    pairs = (kept.T @ kept)[torch.triu_indices(seq, seq, 1).unbind()]  # [S(S-1)/2]
    assert _chi_square(pairs, n * r * (r - 1) / (seq * (seq - 1))) < 120.0  # df 65


def test_rank_keys_give_different_but_uniform_draws() -> None:
    assert rank_key(0) == 0 and len({rank_key(k) for k in range(64)}) == 64
    base = random_scores(4, 16, generator=_gen(3))
    assert torch.equal(base, random_scores(4, 16, generator=_gen(3)))
    keyed = [random_scores(4000, 16, generator=_gen(3), key=rank_key(k)) for k in (1, 2)]
    assert not torch.equal(keyed[0], keyed[1])
    for scores in keyed:
        assert scores.min() >= 0 and scores.max() < 1
        idx = select_tokens(scores, 4)
        counts = torch.zeros(16).scatter_add_(0, idx.flatten(), torch.ones(idx.numel()))
        assert _chi_square(counts, 4000 * 4 / 16) < 45.0  # df 15
    overlap = (select_tokens(keyed[0], 4)[:, :, None] == select_tokens(keyed[1], 4)[:, None]).sum()
    assert abs(float(overlap) / 4000 - 1.0) < 0.1  # independent subsets share r*r/S = 1 token


def test_keep_positions_always_kept() -> None:
    idx = sample_token_indices(500, 20, 3, generator=_gen(), keep_positions=(0, -1))
    assert (idx[:, 0] == 0).all() and (idx[:, -1] == 19).all()
    with pytest.raises(ValueError, match="cannot be kept"):
        sample_token_indices(2, 20, 1, keep_positions=(0, 1))
    with pytest.raises(ValueError, match="out of range"):
        sample_token_indices(2, 20, 4, keep_positions=(25,))


def test_non_padding_tokens_first() -> None:
    lengths = torch.tensor([20, 10, 3, 6])
    attend = torch.arange(20)[None] < lengths[:, None]  # [4, 20]
    idx = sample_token_indices(4, 20, 6, generator=_gen(), attend=attend, keep_positions=(0,))
    valid = attend.gather(1, idx)
    assert valid[:2].all() and valid[3].all()  # enough real tokens: only real ones
    assert valid[2].sum() == 3  # fewer real tokens than r: all of them, then padding


def test_token_validity_reads_every_mask_convention() -> None:
    keys = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]).bool()
    causal = torch.ones(4, 4).tril().bool()
    both = causal[None, None] & keys[:, None, None, :]  # [2, 1, 4, 4]
    additive = torch.zeros(2, 1, 4, 4).masked_fill(~both, torch.finfo(torch.float32).min)
    for mask in (keys, keys.long(), both, additive, keys[:, None, None, :]):
        assert torch.equal(token_validity(mask, 2, 4), keys)
    with pytest.raises(ValueError, match="last dim"):
        token_validity(keys, 2, 5)


@pytest.mark.parametrize("batch_first", [True, False])
def test_gather_and_scatter_match_a_loop(batch_first: bool) -> None:
    torch.manual_seed(0)
    b, s, r, d = 3, 9, 4, 5
    idx = sample_token_indices(b, s, r, generator=_gen())
    x = torch.randn(b, s, d) if batch_first else torch.randn(s, b, d)
    flat = flat_token_index(idx, s, batch_first=batch_first)
    got = gather_tokens(x, flat, r, batch_first=batch_first)
    y = torch.randn_like(got)
    out = scatter_tokens(x, y, flat)
    ref_out = x.clone()
    for i, j in itertools.product(range(b), range(r)):
        pos = int(idx[i, j])
        if batch_first:
            assert torch.equal(got[i, j], x[i, pos])
            ref_out[i, pos] = y[i, j]
        else:
            assert torch.equal(got[j, i], x[pos, i])
            ref_out[pos, i] = y[j, i]
    assert torch.equal(out, ref_out)
    with pytest.raises(RoutingError, match="does not match"):
        scatter_tokens(x, y[..., :2], flat)


def test_scatter_gradients_route_kept_and_dropped_tokens() -> None:
    idx = torch.tensor([[0, 2], [1, 3]])
    x = torch.randn(2, 4, 3, requires_grad=True)
    flat = flat_token_index(idx, 4)
    y = gather_tokens(x, flat, 2, batch_first=True) * 2.0
    scatter_tokens(x, y, flat).sum().backward()
    expected = torch.ones(2, 4, 3)
    expected[0, [0, 2]] = 2.0
    expected[1, [1, 3]] = 2.0
    assert x.grad is not None and torch.equal(x.grad, expected)


def test_gather_mask_rows_and_columns() -> None:
    b, s, r = 2, 6, 3
    idx = torch.tensor([[0, 2, 5], [1, 3, 4]])
    full = torch.randn(b, 2, s, s)  # per-sample, per-head
    got = gather_mask(full, idx)
    for i in range(b):
        assert torch.equal(got[i], full[i][:, idx[i]][:, :, idx[i]])
    shared = torch.randn(1, 1, s, s)  # one causal mask for the batch
    assert gather_mask(shared, idx).shape == (b, 1, r, r)
    assert torch.equal(gather_mask(shared, idx)[1, 0], shared[0, 0][idx[1]][:, idx[1]])
    keys = torch.randn(b, 1, 1, s)  # key-only padding mask
    assert torch.equal(gather_mask(keys, idx)[:, 0, 0], keys[:, 0, 0].gather(1, idx))
    assert torch.equal(gather_mask(keys[:, 0, 0], idx), keys[:, 0, 0].gather(1, idx))
    with pytest.raises(RoutingError, match="query dim"):
        gather_mask(torch.randn(b, 1, 2, s), idx)
    with pytest.raises(RoutingError, match="expected"):
        gather_mask(torch.randn(3, 1, s, s), idx)


def test_gather_positions_for_ids_and_rotary_tables() -> None:
    idx = torch.tensor([[0, 2, 5], [1, 3, 4]])
    ids = torch.arange(6)[None]  # [1, S]
    assert torch.equal(gather_positions(ids, idx, 6), idx)
    assert torch.equal(gather_positions(torch.arange(6), idx, 6), idx)
    cos = torch.randn(1, 6, 4)
    sin = torch.randn(2, 6, 4)
    got_cos, got_sin = gather_positions((cos, sin), idx, 6)
    assert torch.equal(got_cos[1], cos[0, idx[1]]) and torch.equal(got_sin[0], sin[0, idx[0]])
    assert gather_positions(None, idx, 6) is None
    with pytest.raises(RoutingError, match="expected"):
        gather_positions(torch.randn(2, 7), idx, 6)
