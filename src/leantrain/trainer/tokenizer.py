"""Tokenizers of the reference trainer, from local files only: UTF-8 bytes, BERT or GPT-2."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from leantrain.trainer.recipe import DataSpec

__all__ = ["ByteTokenizer", "encode_texts", "load_tokenizer", "token_fields"]


class ByteTokenizer:
    """UTF-8 bytes as token ids (vocabulary 256): needs no files, works on any text."""

    vocab_size = 256
    pad_token_id = 0

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text."""
        return [list(t.encode("utf-8")) for t in texts]


def load_tokenizer(spec: DataSpec, pretrained: str | None = None) -> Any:
    """The recipe's tokenizer, from local files only (never downloaded)."""
    if spec.tokenizer == "byte":
        return ByteTokenizer()
    from transformers import AutoTokenizer, BertTokenizer, GPT2Tokenizer

    if spec.tokenizer_path is None:
        return AutoTokenizer.from_pretrained(pretrained, local_files_only=True)
    # from the folder (vocab.txt / vocab.json + merges.txt): in transformers 5 the constructors'
    # `vocab_file=` keyword is ignored and would leave a 5-token vocabulary
    cls = BertTokenizer if spec.tokenizer == "bert" else GPT2Tokenizer
    tok = cls.from_pretrained(str(spec.resolve(spec.tokenizer_path)), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def token_fields(tokenizer: Any) -> dict[str, Any]:
    """Vocabulary size and special ids a model trained on this tokenizer's output needs."""
    if isinstance(tokenizer, ByteTokenizer):
        return {"vocab_size": 256, "pad_token_id": 0, "bos_token_id": None, "eos_token_id": None}
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens."""
    if isinstance(tokenizer, ByteTokenizer):
        return tokenizer.encode(texts)
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]
