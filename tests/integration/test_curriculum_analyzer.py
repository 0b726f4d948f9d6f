"""DataAnalyzer on real data: SST-2 with the BERT vocabulary, WikiText-2 with GPT-2 BPE."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml

from leantrain.cli import main as cli_main
from leantrain.curriculum import CurriculumIndex, CurriculumIndexError, DataAnalyzer

pytestmark = pytest.mark.shared_data
ROWS = 3000
PAD = 0  # BERT's [PAD]
BERT_VOCAB = 30522
GPT2_VOCAB = 50257


@pytest.fixture(scope="module")
def sst2_ids(shared_data: Path) -> list[list[int]]:
    """The first ROWS SST-2 train sentences tokenised with the real BERT vocabulary."""
    from transformers import BertTokenizerFast

    # transformers 5: vocab= (vocab_file= silently builds a 5-token vocabulary)
    tok = BertTokenizerFast(vocab=str(shared_data / "tokenizers/bert-base-uncased/vocab.txt"))
    with open(shared_data / "glue/SST-2/train.tsv", encoding="utf-8") as fh:
        rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        texts = [r["sentence"] for _, r in zip(range(ROWS), rows, strict=False)]
    ids = tok(texts)["input_ids"]
    assert len(tok) == BERT_VOCAB and min(map(len, ids)) >= 3  # [CLS] ... [SEP]
    return ids


def _direct(ids: list[list[int]], vocab_size: int = BERT_VOCAB) -> dict[str, np.ndarray]:
    """Every metric as DeepSpeed's reference analysis computes it (Megatron-DeepSpeed's
    `analyze_data.py`, BERT path), restated with torch on a padded batch: the histogram is
    `bincount(text, minlength=vocab_size + 1, weights=padding_mask)`, zeros become 1, R is
    −log(F / sum(F)), a sample's rarity is `sum(mask · R[text]).to(long)` and the composite
    coefficient is 10^(ceil(log(seq_len · max R, 10)) + 1)."""
    width = max(map(len, ids))
    text = torch.zeros(len(ids), width, dtype=torch.long)
    mask = torch.zeros(len(ids), width, dtype=torch.long)
    for i, s in enumerate(ids):
        text[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    weights = mask.view(-1).double()
    freq = torch.bincount(text.view(-1), weights=weights, minlength=vocab_size + 1).numpy()
    freq[freq == 0] = 1
    table = torch.tensor(np.log(freq / sum(freq)) * -1, dtype=torch.double)
    seqlen = torch.count_nonzero(mask, dim=1).numpy()
    rarity = torch.sum(mask * table[text], dim=1).to(torch.long).numpy()
    coeff = 10 ** (math.ceil(math.log(int(seqlen.max()) * float(table.max()), 10)) + 1)
    return {
        "seqlen": seqlen,
        "vocab_rarity": rarity,
        "seqlen_vocab_rarity": seqlen * coeff + rarity,
    }


class _Padded(torch.utils.data.Dataset):
    """A map-style dataset of padded rows with attention masks, as a tokenizer returns."""

    def __init__(self, ids: list[list[int]], width: int) -> None:
        self.ids, self.width = ids, width

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = self.ids[i][: self.width]
        pad = self.width - len(row)
        return {
            "input_ids": torch.tensor(row + [PAD] * pad),
            "attention_mask": torch.tensor([1] * len(row) + [0] * pad),
        }


METRICS = ["seqlen", "vocab_rarity", "seqlen_vocab_rarity"]


@pytest.mark.parametrize("workers", [1, 2])
def test_hf_dataset_matches_direct_computation(
    sst2_ids: list[list[int]], tmp_path: Path, workers: int
) -> None:
    ds = datasets.Dataset.from_dict({"input_ids": sst2_ids})
    analyzer = DataAnalyzer(
        ds, tmp_path, METRICS, num_workers=workers, batch_size=500, show_progress=False,
        vocab_size=BERT_VOCAB,
    )  # fmt: skip
    indexes = analyzer.run()
    want = _direct(sst2_ids)
    hist = np.load(tmp_path / "token_histogram" / "accumulated.npy")
    assert len(hist) == BERT_VOCAB + 1  # the whole vocabulary plus one bin, as the reference
    for name in METRICS:
        index = CurriculumIndex.load(tmp_path / name)
        got = np.asarray(index.sample_to_metric)
        assert np.array_equal(got, want[name]), name
        # index_to_sample lists, per distinct value, exactly the samples with it, ascending
        for v in index.values[:: max(1, len(index.values) // 50)]:
            assert np.array_equal(index.samples_with_value(v), np.flatnonzero(got == v))
        assert indexes[name].num_samples == ROWS
    assert (tmp_path / "seqlen" / "histogram.png").stat().st_size > 1000
    assert "vocab_rarity" in (tmp_path / "summary.txt").read_text()
    assert not (tmp_path / "_work").exists()


def test_torch_dataset_with_padding_and_flat_array(
    sst2_ids: list[list[int]], tmp_path: Path
) -> None:
    ids = sst2_ids[:1000]
    width = 40  # some rows are truncated, the rest padded: seqlen counts non-padding only
    cut = [s[:width] for s in ids]
    want = _direct(cut)
    got = DataAnalyzer(
        _Padded(ids, width), tmp_path / "torch", ["seqlen", "vocab_rarity"],
        show_progress=False, vocab_size=BERT_VOCAB,
    ).run()  # fmt: skip
    assert np.array_equal(got["seqlen"].sample_to_metric, want["seqlen"])
    assert np.array_equal(got["vocab_rarity"].sample_to_metric, want["vocab_rarity"])
    tokens = np.concatenate([np.asarray(s, np.int32) for s in cut])
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in cut])])
    got = DataAnalyzer(
        (tokens, offsets), tmp_path / "flat", ["vocab_rarity"], num_workers=2,
        show_progress=False, vocab_size=BERT_VOCAB,
    ).run()  # fmt: skip
    assert np.array_equal(got["vocab_rarity"].sample_to_metric, want["vocab_rarity"])


def test_wikitext_gpt2(shared_data: Path, tmp_path: Path) -> None:
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast(  # transformers 5: vocab=/merges= (vocab_file= loads nothing)
        vocab=str(shared_data / "tokenizers/gpt2/vocab.json"),
        merges=str(shared_data / "tokenizers/gpt2/merges.txt"),
    )
    lines = (shared_data / "lm/wikitext-2/wiki.valid.tokens").read_text(encoding="utf-8")
    texts = [line for line in lines.splitlines() if line.strip()][:1500]
    ids = tok(texts)["input_ids"]
    assert len(tok) == GPT2_VOCAB and sum(map(len, ids)) > 100_000
    got = DataAnalyzer(
        datasets.Dataset.from_dict({"input_ids": ids}),
        tmp_path,
        ["seqlen", "vocab_rarity"],
        num_workers=2,
        show_progress=False,
        vocab_size=GPT2_VOCAB,
    ).run()
    want = _direct(ids, GPT2_VOCAB)
    assert np.array_equal(got["seqlen"].sample_to_metric, want["seqlen"])
    assert np.array_equal(got["vocab_rarity"].sample_to_metric, want["vocab_rarity"])


def test_interrupted_run_resumes_without_redoing_parts(
    sst2_ids: list[list[int]], tmp_path: Path
) -> None:
    ds = datasets.Dataset.from_dict({"input_ids": sst2_ids})
    kw = {"batch_size": 250, "part_size": 500, "show_progress": False}
    first = DataAnalyzer(ds, tmp_path, ["seqlen"], **kw)
    first.prepare()
    first.run_map("values", worker_id=0, num_workers=2)  # "crash": half the parts are done
    stage = tmp_path / "_work" / "values"
    done = {p.name: p.stat().st_mtime_ns for p in stage.glob("part-*")}
    assert sorted(done) == [f"part-{i:06d}" for i in (0, 2, 4)]
    (stage / ".part-000001.tmp-999").mkdir()  # a half-written part of a killed worker
    (stage / ".part-000001.tmp-999" / "seqlen.npy").write_bytes(b"garbage")
    with pytest.raises(CurriculumIndexError, match="not finished"):
        first.run_reduce("values")  # never mistaken for a complete set
    resumed = DataAnalyzer(ds, tmp_path, ["seqlen"], **kw)
    seen: list[int] = []
    original = resumed.source.read
    resumed.source.read = lambda a, b, **k: seen.append(a) or original(a, b, **k)  # type: ignore[method-assign]
    resumed.prepare()
    resumed._map_pool("values")
    assert {p.name: p.stat().st_mtime_ns for p in stage.glob("part-0*") if p.name in done} == done
    assert min(seen) >= 500 and all(not 0 <= a < 500 for a in seen)  # part 0 not recomputed
    resumed.run_reduce("values")
    index = resumed.finish()["seqlen"]
    assert np.array_equal(index.sample_to_metric, [len(s) for s in sst2_ids])


def test_cli_analyze(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = {
        "source": {
            "kind": "text",
            "path": str(shared_data / "glue/SST-2/train.tsv"),
            "text_column": "sentence",
            "limit": 800,
            "tokenizer": {
                "kind": "bert",
                "vocab_file": str(shared_data / "tokenizers/bert-base-uncased/vocab.txt"),
            },
        },
        "output_dir": str(tmp_path / "out"),
        "metrics": ["seqlen", "vocab_rarity"],
    }
    path = tmp_path / "analyze.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli_main(["analyze", str(path)]) == 0
    assert "vocab_rarity: 800 samples" in capsys.readouterr().out
    assert CurriculumIndex.load(tmp_path / "out" / "vocab_rarity").num_samples == 800
    path.write_text(yaml.safe_dump(config | {"metrics": ["nope"]}))
    assert cli_main(["analyze", str(path), "--no-progress"]) == 2
    assert "unknown metric 'nope'" in capsys.readouterr().err
    assert os.path.isdir(tmp_path / "out")


def test_vocab_rarity_matches_the_reference_on_all_of_sst2(
    shared_data: Path, tmp_path: Path
) -> None:
    """All 67,349 SST-2 train sentences through `leantrain analyze` (vocabulary size from the
    tokenizer) agree with the reference computation sample for sample."""
    from transformers import BertTokenizerFast

    config = {
        "source": {
            "kind": "text",
            "path": str(shared_data / "glue/SST-2/train.tsv"),
            "text_column": "sentence",
            "tokenizer": {
                "kind": "bert",
                "vocab_file": str(shared_data / "tokenizers/bert-base-uncased/vocab.txt"),
            },
        },
        "output_dir": str(tmp_path / "out"),
        "metrics": ["vocab_rarity"],
    }
    path = tmp_path / "analyze.json"
    path.write_text(json.dumps(config))
    assert cli_main(["analyze", str(path), "--no-progress"]) == 0
    tok = BertTokenizerFast(vocab=config["source"]["tokenizer"]["vocab_file"])  # type: ignore[index]
    with open(config["source"]["path"], encoding="utf-8") as fh:  # type: ignore[index]
        texts = [r["sentence"] for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    want = _direct(tok(texts)["input_ids"])["vocab_rarity"]
    got = np.asarray(CurriculumIndex.load(tmp_path / "out" / "vocab_rarity").sample_to_metric)
    assert len(got) == 67349
    assert np.array_equal(got, want)


def test_cli_needs_a_vocabulary_size_without_a_tokenizer(
    sst2_ids: list[list[int]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ds = datasets.Dataset.from_dict({"input_ids": sst2_ids[:50]})
    ds.save_to_disk(str(tmp_path / "ds"))
    config = {
        "source": {"kind": "hf_disk", "path": str(tmp_path / "ds")},
        "output_dir": str(tmp_path / "out"),
        "metrics": ["vocab_rarity"],
    }
    path = tmp_path / "analyze.json"
    path.write_text(json.dumps(config))
    assert cli_main(["analyze", str(path), "--no-progress"]) == 2
    assert "vocab_size: required for ['vocab_rarity']" in capsys.readouterr().err
    path.write_text(json.dumps(config | {"vocab_size": BERT_VOCAB}))
    assert cli_main(["analyze", str(path), "--no-progress"]) == 0
    got = CurriculumIndex.load(tmp_path / "out" / "vocab_rarity").sample_to_metric
    assert np.array_equal(got, _direct(sst2_ids[:50])["vocab_rarity"])


@pytest.mark.parametrize("kind", ["numpy", "hf_files"])
def test_cli_reads_numpy_and_hf_files_sources(
    sst2_ids: list[list[int]], tmp_path: Path, kind: str
) -> None:
    """`leantrain analyze` on flat .npy token arrays and on JSON-lines files via `datasets`."""
    ids = sst2_ids[:600]
    if kind == "numpy":
        np.save(tmp_path / "tokens.npy", np.concatenate([np.asarray(s, np.int32) for s in ids]))
        np.save(tmp_path / "offsets.npy", np.concatenate([[0], np.cumsum([len(s) for s in ids])]))
        source = {
            "kind": "numpy",
            "tokens": str(tmp_path / "tokens.npy"),
            "offsets": str(tmp_path / "offsets.npy"),
            "limit": 500,
        }
    else:
        parts = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]  # one dataset from two files
        for part, rows in zip(parts, (ids[:250], ids[250:500]), strict=True):
            part.write_text("".join(json.dumps({"input_ids": r}) + "\n" for r in rows))
        source = {"kind": "hf_files", "format": "json", "data_files": [str(p) for p in parts]}
    config = {
        "source": source,
        "output_dir": str(tmp_path / "out"),
        "metrics": METRICS[:2],
        "vocab_size": BERT_VOCAB,
    }
    path = tmp_path / "analyze.json"
    path.write_text(json.dumps(config))
    assert cli_main(["analyze", str(path), "--no-progress"]) == 0
    want = _direct(ids[:500])
    for name in METRICS[:2]:
        got = CurriculumIndex.load(tmp_path / "out" / name).sample_to_metric
        assert np.array_equal(np.asarray(got), want[name]), name


@pytest.mark.distributed
def test_torchrun_ranks_map_and_rank0_reduces(sst2_ids: list[list[int]], tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict({"input_ids": sst2_ids})
    ds.save_to_disk(str(tmp_path / "ds"))
    config = {
        "source": {"kind": "hf_disk", "path": str(tmp_path / "ds")},
        "output_dir": str(tmp_path / "out"),
        "metrics": ["seqlen", "vocab_rarity"],
        "num_workers": 2,
        "batch_size": 200,
        "vocab_size": BERT_VOCAB,
    }
    (tmp_path / "a.json").write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "leantrain.cli", "analyze", str(tmp_path / "a.json"),
           "--no-progress"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    want = _direct(sst2_ids)
    for name in ("seqlen", "vocab_rarity"):
        got = CurriculumIndex.load(tmp_path / "out" / name).sample_to_metric
        assert np.array_equal(got, want[name])
