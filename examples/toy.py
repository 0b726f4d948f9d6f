"""The toy model and data the examples train, so that each runs anywhere in seconds and nothing
is downloaded. Swap in your own: any model whose blocks leantrain's registry knows
(`model.config.model_type` gpt2, bert, roberta, llama, mistral, qwen2, vit, ...; pass `layers=`
to `leantrain.prepare` for others) and any map-style dataset of dicts of tensors.

The scripts run as `python examples/<name>.py`, so this folder is on `sys.path` and they
`import toy`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

__all__ = ["CONFIG", "SEQ", "ByteBlocks", "tiny_gpt2"]

#: The examples' DeepSpeed config: PLD, sequence-length warmup 32 → 128 and random-LTD.
CONFIG = Path(__file__).with_name("ds_config.json")
#: Tokens per sample.
SEQ = 128


def tiny_gpt2(layers: int = 4, positions: int = SEQ) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 (Pre-LN, as PLD wants) of `layers` blocks, width 64, over
    bytes (vocabulary 256)."""
    config = GPT2Config(
        vocab_size=256, n_embd=64, n_layer=layers, n_head=4, n_positions=positions,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


class ByteBlocks(Dataset):
    """Consecutive blocks of `seq` bytes of a text file as causal-LM samples (labels = inputs).
    Default text: the Python standard library's `argparse.py` (about 800 blocks of 128)."""

    def __init__(self, path: str | Path | None = None, seq: int = SEQ) -> None:
        data = Path(path or argparse.__file__).read_bytes()
        self.blocks = torch.tensor(list(data[: len(data) // seq * seq])).view(-1, seq)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.blocks[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
