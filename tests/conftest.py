"""Shared fixtures: tiny real Hugging Face models built in-process, the shared data folder, and
the means of fault tests (`leantrain` commands in processes a test can kill, small filesystems)."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from hypothesis import settings
from tqdm import tqdm
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    RobertaPreLayerNormConfig,
    RobertaPreLayerNormForMaskedLM,
    ViTConfig,
    ViTForImageClassification,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

# CI replays the same examples every run (a red CI must mean a real regression); developers'
# runs draw fresh ones and keep failures in .hypothesis/.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

VOCAB = 97
SEQ = 16


def make_bert(num_layers: int = 4, attn: str = "eager") -> PreTrainedModel:
    """A tiny BERT masked-LM (Post-LN encoder with padding masks)."""
    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation=attn,
    )
    return BertForMaskedLM(cfg).eval()


def make_roberta_preln(num_layers: int = 4, attn: str = "eager") -> PreTrainedModel:
    """A tiny Pre-LN BERT masked-LM (RoBERTa-PreLayerNorm; positions start at pad id + 1)."""
    cfg = RobertaPreLayerNormConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64 + 2,
        pad_token_id=0,  # the BERT WordPiece vocabulary's [PAD]
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation=attn,
    )
    return RobertaPreLayerNormForMaskedLM(cfg).eval()


def make_gpt2(num_layers: int = 4, attn: str = "eager") -> PreTrainedModel:
    """A tiny GPT-2 causal LM."""
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=num_layers,
        n_head=4,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation=attn,
    )
    return GPT2LMHeadModel(cfg).eval()


def make_llama(num_layers: int = 4, attn: str = "eager") -> PreTrainedModel:
    """A tiny Llama causal LM (rotary positions, grouped-query attention)."""
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(cfg).eval()


def make_vit(num_layers: int = 4, attn: str = "eager") -> PreTrainedModel:
    """A tiny ViT image classifier (16 patches + CLS)."""
    cfg = ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=10,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation=attn,
    )
    return ViTForImageClassification(cfg).eval()


MODEL_FACTORIES: dict[str, Callable[..., PreTrainedModel]] = {
    "bert": make_bert,
    "gpt2": make_gpt2,
    "llama": make_llama,
    "roberta_preln": make_roberta_preln,
    "vit": make_vit,
}


def make_inputs(
    arch: str, batch: int = 3, seq: int = SEQ, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random inputs for `arch`; text models get a padding mask with ragged lengths."""
    g = torch.Generator().manual_seed(seed)
    if arch == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}
    ids = torch.randint(1, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    for i in range(1, batch):  # ragged: the first row is full length
        mask[i, seq - 2 * i :] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (two spin-wait badly on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=sorted(MODEL_FACTORIES))
def arch(request: pytest.FixtureRequest) -> str:
    """Each tiny architecture in turn."""
    return request.param


@pytest.fixture
def tiny_model(arch: str) -> PreTrainedModel:
    """A freshly initialised tiny model of `arch` (seeded), in eval mode."""
    torch.manual_seed(0)
    return MODEL_FACTORIES[arch]()


BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture
def load_script(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """`load_script("name")` runs `benchmarks/name.py` (not a package) as module `name`,
    registered in sys.modules while the test runs (dataclasses look their module up there), with
    benchmarks/ on sys.path for its helper modules, as when it runs as a script."""

    def load(name: str) -> ModuleType:
        monkeypatch.syspath_prepend(str(BENCHMARKS))
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load


SHARED_DATA = Path(
    os.environ.get("LEANTRAIN_SHARED_DATA", Path(__file__).parents[1] / ".." / "shared" / "data")
).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (or $LEANTRAIN_SHARED_DATA); tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared data folder at {SHARED_DATA} (set LEANTRAIN_SHARED_DATA)")
    return SHARED_DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests cleanly where no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def all_three_sections(*, gamma: float, curriculum_steps: int, ltd_steps: int) -> dict[str, Any]:
    """DeepSpeed sections turning on PLD, seqlen warmup 16→32 and random-LTD (blocks 1–2 of 4,
    16→32 tokens) for a 4-block GPT-2 trained on 32-token blocks."""
    return {
        "progressive_layer_drop": {"enabled": True, "theta": 0.5, "gamma": gamma},
        "curriculum_learning": {
            "enabled": True,
            "curriculum_type": "seqlen",
            "min_difficulty": 16,
            "max_difficulty": 32,
            "schedule_type": "fixed_linear",
            "schedule_config": {"total_curriculum_step": curriculum_steps, "difficulty_step": 8},
        },
        "data_efficiency": {
            "enabled": True,
            "data_routing": {
                "enabled": True,
                "random_ltd": {
                    "enabled": True,
                    "random_ltd_layer_id": [1, 2],
                    "random_ltd_layer_num": 2,
                    "total_layer_num": 4,
                    "model_type": "decoder",
                    "random_ltd_schedule": {
                        "min_value": 16,
                        "max_value": 32,
                        "schedule_config": {"require_steps": ltd_steps, "seq_per_step": 8},
                    },
                },
            },
        },
    }


# -- fault tests -------------------------------------------------------------------------------


@functools.cache
def can_mount_tmpfs() -> bool:
    """Whether this machine lets a test mount a small tmpfs (`unshare -rm`: a user and mount
    namespace of its own, no root needed) to fill a disk."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def run_on_tmpfs(
    disk: Path, size: str, script: Path, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`python script *args` in a mount namespace of its own in which the empty folder `disk`
    is a tmpfs of `size` ("1m", "1536k"); the tmpfs goes when the process ends. Needs
    `can_mount_tmpfs()`."""
    mount = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", mount, "sh", size, str(disk), sys.executable, str(script),
         *args],
        env=os.environ | env,
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def _die(*args: Any, **kwargs: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _cli_child(argv: list[str], log: str, env: dict[str, str], die_at: str | None) -> None:
    """Body of a `start_cli` process: run `leantrain argv` with output to `log`; exit with its
    status. `die_at` ("module:Class.method") is replaced by a SIGKILL of the process itself."""
    os.environ.update(env)
    torch.set_num_threads(1)
    tqdm.set_lock(threading.RLock())  # not a semaphore, which a SIGKILL would leak
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if die_at is not None:
        module, _, path = die_at.partition(":")
        *owners, name = path.split(".")
        owner = functools.reduce(getattr, owners, importlib.import_module(module))
        setattr(owner, name, _die)
    from leantrain.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def fork_context() -> multiprocessing.context.ForkServerContext:
    """Processes forked from a server that imported torch, transformers and leantrain once (a
    fresh interpreter spends seconds importing them); the target must be importable."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["conftest", "leantrain.trainer.loop", "leantrain.cli"])
    return context


def start_cli(
    *argv: str, log: Path, env: dict[str, str] | None = None, die_at: str | None = None
) -> BaseProcess:
    """`leantrain *argv` in a process of its own (`fork_context`), which a test may SIGKILL at
    any moment; one torch thread, so that every run computes the same bits. Its exit code is
    leantrain's (-9 when killed)."""
    process = fork_context().Process(
        target=_cli_child, args=(list(argv), str(log), env or {}, die_at)
    )
    process.start()
    return process
