"""DataAnalyzer under faults: killed parents, kills during cleanup, corrupted or foreign files,
full disks and leftovers of dead processes. Each test describes the failure it guards against."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
from conftest import can_mount_tmpfs, run_on_tmpfs

from leantrain.curriculum import CurriculumIndex, CurriculumIndexError, DataAnalyzer
from leantrain.curriculum.sampler import CurriculumSampler
from leantrain.files import WriteError, temp_path

SRC = str(Path(__file__).resolve().parents[2] / "src")
VOCAB = 50


def _corpus(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(rng.integers(1, 40, n))])
    return rng.integers(0, VOCAB, int(offsets[-1])).astype(np.int32), offsets


def _analyzer(out: Path, data: Any = None, **kw: Any) -> DataAnalyzer:
    kw = {"batch_size": 250, "part_size": 500, "show_progress": False, "vocab_size": VOCAB} | kw
    return DataAnalyzer(
        _corpus() if data is None else data, out, kw.pop("metrics", ["seqlen"]), **kw
    )


def _seqlens() -> np.ndarray:
    return np.diff(_corpus()[1])


def _mapped(out: Path) -> Path:
    """Map every part (the reduce not yet run); the values stage folder."""
    analyzer = _analyzer(out)
    analyzer.prepare()
    analyzer.run_map("values")
    return out / "_work" / "values"


# ---- processes ------------------------------------------------------------------------------
WORKER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import numpy as np
    from leantrain.curriculum import DataAnalyzer, Metric

    def slow(tokens):
        Path(sys.argv[2], str(os.getpid())).touch()
        time.sleep(120)
        return 0

    if __name__ == "__main__":
        if len(sys.argv) > 3:  # the caller's own SIGTERM handler, which returns
            import signal
            signal.signal(signal.SIGTERM, lambda *args: print("handler ran", flush=True))
        tokens, offsets = np.arange(40) % 7, np.arange(0, 41, 4)
        try:
            DataAnalyzer((tokens, offsets), sys.argv[1], [Metric("slow", slow)], num_workers=2,
                         batch_size=1, part_size=1, show_progress=False).run()
        except KeyboardInterrupt:
            print("stopped like Ctrl-C", flush=True)
            time.sleep(5)  # alive: any worker still running now was not stopped by the pool
    """
)


def _dead(pid: int) -> bool:
    """Gone, or a zombie (exited; whoever adopted it has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


@contextmanager
def _analysis_with_workers(
    tmp_path: Path, *extra: str
) -> Iterator[tuple[subprocess.Popen, list[int]]]:
    """WORKER_SCRIPT running in a subprocess once both its workers are busy; whatever survives
    the test is killed by pid on the way out."""
    (tmp_path / "script.py").write_text(WORKER_SCRIPT)
    pids_dir = tmp_path / "pids"
    pids_dir.mkdir()
    main = subprocess.Popen(
        [sys.executable, str(tmp_path / "script.py"), str(tmp_path / "out"), str(pids_dir), *extra],
        env=os.environ | {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and main.poll() is None:
            time.sleep(0.1)
            workers = [int(p.name) for p in pids_dir.iterdir()]
        assert len(workers) == 2, "the workers never started"
        yield main, workers
    finally:
        if main.poll() is None:
            main.kill()
        main.communicate()  # reaps it and closes its stdout
        for pid in workers:
            if not _dead(pid):
                os.kill(pid, signal.SIGKILL)


def _wait_dead(pids: list[int], seconds: float) -> list[int]:
    """The pids still running after waiting up to `seconds` for all of them to end."""
    deadline = time.monotonic() + seconds
    while not all(_dead(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if not _dead(p)]


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="parent-death detection is POSIX-only")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_exit_when_the_parent_dies(tmp_path: Path, sig: signal.Signals) -> None:
    """Workers used to sleep on under PID 1 after the main process got SIGTERM or SIGKILL."""
    with _analysis_with_workers(tmp_path) as (main, workers):
        os.kill(main.pid, sig)
        assert main.wait(timeout=30) == -sig  # SIGTERM ends it as the default action would
        assert _wait_dead(workers, 10) == []


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_stops_the_pool_like_ctrl_c(tmp_path: Path) -> None:
    """With a SIGTERM handler of the caller's that returns, the pool used to carry on with its
    parts; now its workers stop at once and the run ends with KeyboardInterrupt, as on Ctrl-C,
    while the main process is still alive (so it is not the parent watch that ends them)."""
    with _analysis_with_workers(tmp_path, "keep-handler") as (main, workers):
        os.kill(main.pid, signal.SIGTERM)
        assert _wait_dead(workers, 4) == []  # the script stays alive 5 s after stopping
        assert main.poll() is None
        out, _ = main.communicate(timeout=30)
        assert out.splitlines() == ["handler ran", "stopped like Ctrl-C"]


# ---- kills during cleanup, and corrupted parts ------------------------------------------------
def test_part_with_done_json_but_lost_files_is_recomputed(tmp_path: Path) -> None:
    """A kill while `_work` was deleted left done.json without its data: every re-run failed
    with FileNotFoundError."""
    (_mapped(tmp_path) / "part-000002" / "seqlen.npy").unlink()
    index = _analyzer(tmp_path).run()["seqlen"]
    assert np.array_equal(index.sample_to_metric, _seqlens())


def test_part_without_done_json_is_replaced(tmp_path: Path) -> None:
    """The other order: data without done.json. The recompute could not replace the folder and
    the OSError was swallowed, so every re-run said "parts [2] ... are not finished"."""
    (_mapped(tmp_path) / "part-000002" / "done.json").unlink()
    index = _analyzer(tmp_path).run()["seqlen"]
    assert np.array_equal(index.sample_to_metric, _seqlens())


def test_flipped_bytes_in_a_finished_part_are_recomputed(tmp_path: Path) -> None:
    """A finished part was reused without its checksum: flipped bytes gave wrong values."""
    path = _mapped(tmp_path) / "part-000001" / "seqlen.npy"
    data = bytearray(path.read_bytes())
    data[-40:] = bytes(b ^ 0x5A for b in data[-40:])
    path.write_bytes(bytes(data))
    index = _analyzer(tmp_path).run()["seqlen"]
    assert np.array_equal(index.sample_to_metric, _seqlens())


def test_a_kill_while_deleting_work_never_leaves_it_half_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    analyzer = _analyzer(tmp_path)
    analyzer.prepare()
    analyzer.run_map("values")
    analyzer.run_reduce("values")

    def killed_midway(path: Any, *args: Any, **kw: Any) -> None:
        for npy in Path(path).rglob("*.npy"):  # some files gone, then the process is killed
            npy.unlink()
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(shutil, "rmtree", killed_midway)
        with pytest.raises(KeyboardInterrupt):
            analyzer.finish()
    assert not (tmp_path / "_work").exists()  # renamed aside before the deletion started
    index = _analyzer(tmp_path).run()["seqlen"]
    assert np.array_equal(index.sample_to_metric, _seqlens())


def test_a_corrupted_token_histogram_is_not_reused(tmp_path: Path) -> None:
    """The histogram was reused without its checksum: one flipped count changed vocab_rarity
    for most samples with no error."""
    first = np.asarray(
        _analyzer(tmp_path, metrics=["vocab_rarity"]).run()["vocab_rarity"].sample_to_metric
    )
    hist = tmp_path / "token_histogram" / "accumulated.npy"
    counts = np.load(hist)
    counts[3] += 10**6
    np.save(hist, counts)
    again = _analyzer(tmp_path, metrics=["vocab_rarity"]).run()["vocab_rarity"]
    assert np.array_equal(again.sample_to_metric, first)
    assert np.load(hist)[3] == counts[3] - 10**6  # computed again


# ---- an index is tied to its metric and its data ---------------------------------------------
def _config(metrics: dict[str, Path]) -> dict[str, Any]:
    def metric(path: Path) -> dict[str, Any]:
        return {
            "index_to_sample_path": str(path), "index_to_metric_path": str(path),
            "difficulty_type": "percentile", "clustering_type": "schedule_based",
            "min_difficulty": 10, "max_difficulty": 100, "schedule_type": "fixed_linear",
            "schedule_config": {"total_curriculum_step": 10, "difficulty_step": 1},
        }  # fmt: skip

    learning = {"enabled": True, "curriculum_metrics": {k: metric(v) for k, v in metrics.items()}}
    sampling = {"enabled": True, "curriculum_learning": learning}
    return {"data_efficiency": {"enabled": True, "data_sampling": sampling}}


def test_an_index_of_another_metric_is_refused(tmp_path: Path) -> None:
    _analyzer(tmp_path, metrics=["seqlen", "vocab_rarity"]).run()
    with pytest.raises(CurriculumIndexError, match="an index of metric 'vocab_rarity', used for"):
        CurriculumSampler(_config({"seqlen": tmp_path / "vocab_rarity"}), micro_batch_size=4)
    with pytest.raises(CurriculumIndexError, match="used for metric 'seqlen'"):
        CurriculumIndex.load(tmp_path / "vocab_rarity", metric="seqlen")
    # Megatron-DeepSpeed's scripts name the vocab_rarity curriculum "voc"
    CurriculumSampler(_config({"voc": tmp_path / "vocab_rarity"}), micro_batch_size=4)


def test_an_index_of_other_data_is_refused(tmp_path: Path) -> None:
    """An index of other data with the same sample count was accepted."""
    tokens, offsets = _corpus()
    _analyzer(tmp_path, (tokens, offsets)).run()
    rows = [tokens[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    config = _config({"seqlen": tmp_path / "seqlen"})
    same = datasets.Dataset.from_dict({"input_ids": rows})  # the same samples, stored otherwise
    sampler = CurriculumSampler(config, micro_batch_size=4, dataset=same)
    assert sampler.num_samples == len(rows)
    other_tokens, other_offsets = _corpus(seed=1)
    other = [
        other_tokens[other_offsets[i] : other_offsets[i + 1]].tolist() for i in range(len(rows))
    ]
    with pytest.raises(CurriculumIndexError, match=r"sample \d+ of the dataset differs"):
        CurriculumSampler(config, micro_batch_size=4, dataset=other)
    with pytest.raises(CurriculumIndexError, match="covers 3000 samples, the dataset has 10"):
        CurriculumSampler(config, micro_batch_size=4, dataset=rows[:10])
    images = [(np.zeros((2, 2), np.float32), 0)] * len(rows)  # cannot be read as tokens
    with pytest.warns(UserWarning, match="only the sample count was checked"):
        CurriculumSampler(config, micro_batch_size=4, dataset=images)
    CurriculumSampler(config, micro_batch_size=4, dataset=other, verify_index=False)
    # prepare() hands the training data to its sampler, so the check runs there too
    from conftest import make_gpt2

    import leantrain

    with pytest.raises(CurriculumIndexError, match=r"sample \d+ of the dataset differs"):
        leantrain.prepare(make_gpt2(), config, other, micro_batch_size=4)


def test_sample_ids_and_offsets_are_range_checked_at_load(tmp_path: Path) -> None:
    _analyzer(tmp_path).run()
    ids = np.load(tmp_path / "seqlen" / "index_to_sample.npy", mmap_mode="r+")
    ids[7] = len(ids)  # one past the end: an IndexError deep in the sampler before
    ids.flush()
    del ids
    with pytest.raises(CurriculumIndexError, match=r"index_to_sample\.npy: sample ids outside"):
        CurriculumIndex.load(tmp_path / "seqlen", verify=False)
    _analyzer(tmp_path).run()
    offsets = np.load(tmp_path / "seqlen" / "index_to_sample_offsets.npy", mmap_mode="r+")
    offsets[2] = offsets[1] - 1
    offsets.flush()
    del offsets
    with pytest.raises(CurriculumIndexError, match="offsets must rise strictly"):
        CurriculumIndex.load(tmp_path / "seqlen", verify=False)


# ---- full disks and leftovers -----------------------------------------------------------------
DISK_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from leantrain.curriculum import DataAnalyzer
    from leantrain.files import WriteError

    n = 100_000
    offsets = np.arange(n + 1, dtype=np.int64) * 3
    tokens = np.zeros(3 * n, np.int32)
    try:
        DataAnalyzer((tokens, offsets), sys.argv[1], ["seqlen"], show_progress=False).run()
    except WriteError as err:
        print(err)
        sys.exit(3)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not can_mount_tmpfs(), reason="cannot mount a tmpfs (needs `unshare -rm`)")
def test_a_full_disk_is_an_error_naming_the_file(tmp_path: Path) -> None:
    """On a 1 MiB tmpfs the index files do not fit: the process used to die of SIGBUS while
    filling a sparse memmap (or raise "N requested and M written" without a path)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "script.py").write_text(DISK_SCRIPT)
    done = run_on_tmpfs(disk, "1m", tmp_path / "script.py", f"{disk}/out", env={"PYTHONPATH": SRC})
    assert done.returncode == 3, (done.returncode, done.stderr[-2000:])
    assert f"{disk}/out/" in done.stdout
    assert "No space left on device" in done.stdout and "MiB free" in done.stdout


def test_write_errors_name_the_path_and_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "posix_fallocate", no_space, raising=False)
        with pytest.raises(WriteError, match=r"sample_to_metric\.npy: cannot write: No space"):
            _analyzer(tmp_path / "a").run()

    def short_write(*args: Any, **kw: Any) -> None:
        raise OSError("29668 requested and 14832 written")  # numpy's message, no errno

    with monkeypatch.context() as m:
        m.setattr(np, "save", short_write)
        with pytest.raises(WriteError, match=r"seqlen\.npy: cannot write: short write \(29668"):
            _analyzer(tmp_path / "b").run()
    assert isinstance(WriteError("x"), OSError)  # callers catching OSError still do


def test_leftovers_of_dead_processes_are_swept(tmp_path: Path) -> None:
    """`.<metric>.tmp-<pid>` folders of crashed runs were never removed."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    def named(path: Path, pid: int, host: str | None = None) -> Path:
        mine = temp_path(path).name  # .<name>.tmp-<host>-<our pid>
        stem, our_host = mine.rsplit("-", 2)[0], mine.rsplit("-", 2)[1]
        return path.with_name(f"{stem}-{host or our_host}-{pid}")

    stage = tmp_path / "_work" / "values"
    stage.mkdir(parents=True)
    dead = [named(tmp_path / "seqlen", gone.pid), named(stage / "part-000001", gone.pid)]
    dead.append(tmp_path / f".seqlen.old-{gone.pid}")  # the older form, without a host
    kept = [named(tmp_path / "y", os.getpid()), named(tmp_path / "x", gone.pid, "elsewhere")]
    for path in dead + kept:
        path.mkdir()
        (path / "data.npy").write_bytes(b"x" * 100)
    _analyzer(tmp_path).run()
    assert [p for p in dead if p.exists()] == []
    assert all(p.exists() for p in kept)  # a live process's, and another host's (shared disk)


def test_manifest_records_the_data_digests(tmp_path: Path) -> None:
    _analyzer(tmp_path).run()
    manifest = json.loads((tmp_path / "seqlen" / "manifest.json").read_text())
    assert manifest["metric"] == "seqlen"
    assert len(manifest["data"]["probes"]) == 32
    assert manifest["data"]["read_as"]["column"] == "input_ids"
