"""CurriculumSampler on an index of real data (SST-2, BERT vocabulary)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from leantrain.curriculum import (
    CurriculumIndex,
    CurriculumSampler,
    CurriculumScheduler,
    DataAnalyzer,
    write_index,
)
from leantrain.errors import ConfigError, LeantrainError

pytestmark = pytest.mark.shared_data
ROWS = 3000


@pytest.fixture(scope="module")
def index_dir(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """seqlen and vocab_rarity indexes of the first ROWS SST-2 train sentences."""
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast(vocab=str(shared_data / "tokenizers/bert-base-uncased/vocab.txt"))
    with open(shared_data / "glue/SST-2/train.tsv", encoding="utf-8") as fh:
        rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        texts = [r["sentence"] for _, r in zip(range(ROWS), rows, strict=False)]
    ds = datasets.Dataset.from_dict({"input_ids": tok(texts)["input_ids"]})
    out = tmp_path_factory.mktemp("sst2_index")
    DataAnalyzer(
        ds, out, ["seqlen", "vocab_rarity"], vocab_size=len(tok), show_progress=False
    ).run()
    return out


def _seqlen_metric(index_dir: Path, **over: Any) -> dict[str, Any]:
    return {
        "index_to_sample_path": str(index_dir / "seqlen"),
        "index_to_metric_path": str(index_dir / "seqlen"),
        "difficulty_type": "value",
        "clustering_type": "schedule_based",
        "min_difficulty": 8,
        "max_difficulty": 64,
        "schedule_type": "fixed_linear",
        "schedule_config": {"total_curriculum_step": 40, "difficulty_step": 4},
    } | over


def _config(metrics: dict[str, Any], seed: int = 1234) -> dict[str, Any]:
    curriculum = {"enabled": True, "curriculum_metrics": metrics}
    sampling = {"enabled": True, "curriculum_learning": curriculum}
    return {"data_efficiency": {"enabled": True, "seed": seed, "data_sampling": sampling}}


def _values(index_dir: Path, name: str) -> np.ndarray:
    return np.asarray(CurriculumIndex.load(index_dir / name, verify=False).sample_to_metric)


def test_admits_nothing_over_threshold_and_clusters_are_used_once(index_dir: Path) -> None:
    cfg = _config({"seqlen": _seqlen_metric(index_dir)})
    seqlen = _values(index_dir, "seqlen")
    sched = CurriculumScheduler(_seqlen_metric(index_dir))
    gas, world = 2, 2
    draws = []
    for rank in range(world):
        sampler = CurriculumSampler(
            cfg, micro_batch_size=8, gradient_accumulation_steps=gas, rank=rank, world_size=world
        )
        for i, batch in enumerate(sampler):
            step = i // gas + 1
            assert len(batch) == 8
            assert seqlen[batch].max() <= sched.get_difficulty(step), step
            if rank == 0:
                assert sampler.get_current_difficulties() == {"seqlen": sched.get_difficulty(step)}
            draws.extend(batch)
    assert len(draws) == len(sampler) * 8 * world == (ROWS // 32) * 32
    # clusters are value ranges (d_prev, d]; within one, no repeat before it is exhausted
    levels = sorted({sched.get_difficulty(k) for k in range(1, 200)})
    cluster_of = np.searchsorted(levels, seqlen, side="left")
    drawn = np.asarray(draws)
    for c in range(len(levels)):
        size = int((cluster_of == c).sum())
        mine = drawn[cluster_of[drawn] == c]
        assert len(np.unique(mine)) == min(len(mine), size), c


def test_ranks_disjoint_and_coverage_complete(index_dir: Path) -> None:
    full = _seqlen_metric(index_dir, min_difficulty=512, max_difficulty=512)
    full["schedule_config"] = {"total_curriculum_step": 1, "difficulty_step": 8}
    cfg = _config({"seqlen": full})
    kw = {"micro_batch_size": 8, "gradient_accumulation_steps": 2, "world_size": 3}
    per_rank = [list(CurriculumSampler(cfg, rank=r, **kw)) for r in range(3)]
    unsharded = list(CurriculumSampler(cfg, shard=False, **kw))
    for step, batches in enumerate(zip(*per_rank, strict=True)):
        flat = [i for b in batches for i in b]
        assert len(set(flat)) == len(flat)  # disjoint ranks
        assert [list(b) for b in batches] == unsharded[3 * step : 3 * step + 3]
    everything = [i for b in unsharded for i in b]
    assert len(everything) == len(set(everything)) == (ROWS // 48) * 48  # one pass, no repeat


@pytest.mark.parametrize("clustering", ["schedule_based", "single_cluster"])
def test_two_metrics_value_and_percentile(index_dir: Path, clustering: str) -> None:
    rarity = {
        "index_to_sample_path": str(index_dir / "vocab_rarity"),
        "difficulty_type": "percentile",
        "clustering_type": clustering,
        "min_difficulty": 20,
        "max_difficulty": 100,
        "schedule_type": "fixed_root",
        "schedule_config": {"total_curriculum_step": 30, "difficulty_step": 1, "root_degree": 2},
    }
    seq_cfg = _seqlen_metric(index_dir, clustering_type=clustering)
    cfg = _config({"seqlen": seq_cfg, "vocab_rarity": rarity})
    seqlen = _values(index_dir, "seqlen")
    order = np.asarray(CurriculumIndex.load(index_dir / "vocab_rarity").index_to_sample)
    rank_of = np.empty(ROWS, np.int64)
    rank_of[order] = np.arange(ROWS)
    s1, s2 = CurriculumScheduler(seq_cfg), CurriculumScheduler(rarity)
    sampler = CurriculumSampler(cfg, micro_batch_size=16, rank=0, world_size=1)
    seen = set()
    for step, batch in enumerate(sampler, start=1):
        assert seqlen[batch].max() <= s1.get_difficulty(step)
        pct = s2.get_difficulty(step)
        cut = ROWS if pct == 100 else (ROWS // 100) * pct
        assert rank_of[batch].max() < cut
        seen.update(batch)
    assert len(seen) > ROWS // 2


def _continue(cfg: dict, state: dict | None, n: int, workers: int) -> list[list[int]]:
    """Batches after `state` from a fresh sampler in this process (the reference)."""
    sampler = CurriculumSampler(
        cfg, micro_batch_size=4, gradient_accumulation_steps=3, rank=1, world_size=2
    )
    if state is not None:
        sampler.load_state_dict(state)
    loader = DataLoader(range(ROWS), batch_sampler=sampler, num_workers=workers)
    out = []
    for batch in loader:
        out.append(batch.tolist())
        if len(out) == n:
            break
    return out


SUBPROCESS = """
import json, sys
sys.path[:0] = {paths!r}
from test_curriculum_sampler import _continue
cfg, state = json.load(open({cfg!r})), json.load(open({state!r}))
print(json.dumps(_continue(cfg, state, 25, 2)))
"""


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # on 1 CPU
def test_resume_in_a_fresh_process_is_bit_exact(index_dir: Path, tmp_path: Path) -> None:
    cfg = _config({"seqlen": _seqlen_metric(index_dir)}, seed=99)
    sampler = CurriculumSampler(
        cfg, micro_batch_size=4, gradient_accumulation_steps=3, rank=1, world_size=2
    )
    loader = DataLoader(range(ROWS), batch_sampler=sampler, num_workers=2)
    seen = []
    for batch in loader:
        seen.append(batch.tolist())
        if len(seen) == 7 + 25:
            break
    # the DataLoader prefetched ahead: ask for the state at the training loop's count
    assert sampler.consumed_micro_batches > 7
    state = sampler.state_dict(consumed_micro_batches=7)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "state.json").write_text(json.dumps(state))
    code = SUBPROCESS.format(
        paths=[str(Path(__file__).parent), *sys.path],
        cfg=str(tmp_path / "cfg.json"),
        state=str(tmp_path / "state.json"),
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == seen[7:]
    assert _continue(cfg, None, 7, 0) == seen[:7]  # and a fresh start replays the beginning


def test_resume_refuses_changed_config_or_index(index_dir: Path, tmp_path: Path) -> None:
    cfg = _config({"seqlen": _seqlen_metric(index_dir)})
    sampler = CurriculumSampler(cfg, micro_batch_size=4)
    next(iter(sampler))
    state = sampler.state_dict()
    changed = _config({"seqlen": _seqlen_metric(index_dir, max_difficulty=60)})
    with pytest.raises(ConfigError, match="different config"):
        CurriculumSampler(changed, micro_batch_size=4).load_state_dict(state)
    with pytest.raises(ConfigError, match="different batch"):
        CurriculumSampler(cfg, micro_batch_size=8).load_state_dict(state)
    other = write_index(tmp_path, "seqlen", _values(index_dir, "seqlen")[::-1].copy())
    moved = _config({"seqlen": _seqlen_metric(index_dir, index_to_sample_path=str(other))})
    with pytest.raises(ConfigError, match="different index"):
        CurriculumSampler(moved, micro_batch_size=4).load_state_dict(state)


def test_set_epoch_and_skip_follow_one_stream(index_dir: Path) -> None:
    cfg = _config({"seqlen": _seqlen_metric(index_dir)})
    run = CurriculumSampler(cfg, micro_batch_size=32)
    epoch0, epoch1 = list(run), list(run)  # iter() continues where the last one stopped
    assert len(epoch0) == len(epoch1) == ROWS // 32
    jumped = CurriculumSampler(cfg, micro_batch_size=32)
    jumped.set_epoch(1)  # e.g. HF Trainer resuming in epoch 1: replays the draws
    assert list(jumped) == epoch1
    jumped.set_epoch(1)  # already inside epoch 1's range? no: at its end, so epoch 1 again
    assert next(iter(jumped)) == epoch1[0]


def test_no_admitted_sample_and_unindexed_truncation_metric(index_dir: Path) -> None:
    low = _seqlen_metric(index_dir, min_difficulty=1, max_difficulty=64)
    low["schedule_config"] = {"total_curriculum_step": 1000, "difficulty_step": 1}
    with pytest.raises(LeantrainError, match="no sample is admitted at step 1"):
        next(iter(CurriculumSampler(_config({"seqlen": low}), micro_batch_size=4)))
    truncate = {
        "difficulty_type": "value",
        "clustering_type": "single_cluster",
        "min_difficulty": 16,
        "max_difficulty": 128,
        "schedule_type": "fixed_linear",
        "schedule_config": {"total_curriculum_step": 10, "difficulty_step": 8},
    }
    with pytest.raises(ConfigError, match="num_samples"):
        CurriculumSampler(_config({"seqlen_truncate": truncate}), micro_batch_size=4)
    sampler = CurriculumSampler(
        _config({"seqlen_truncate": truncate}), micro_batch_size=4, num_samples=100
    )
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert sampler.get_current_difficulties() == {"seqlen_truncate": 128}
    with pytest.raises(ConfigError, match="schedule_based"):
        CurriculumSampler(
            _config({"s": truncate | {"clustering_type": "schedule_based"}}),
            micro_batch_size=4,
            num_samples=100,
        )
    assert torch.utils.data.Sampler in type(sampler).__mro__


def test_accelerate_sharding_of_unsharded_sampler_gives_each_rank_its_slice(
    index_dir: Path,
) -> None:
    from accelerate.data_loader import BatchSamplerShard

    cfg = _config({"seqlen": _seqlen_metric(index_dir)})
    kw = {"micro_batch_size": 8, "gradient_accumulation_steps": 2, "world_size": 2}
    for rank in range(2):
        mine = list(CurriculumSampler(cfg, rank=rank, **kw))
        shard = BatchSamplerShard(
            CurriculumSampler(cfg, shard=False, **kw), num_processes=2, process_index=rank
        )
        assert len(shard) == len(mine)
        assert list(shard) == mine
