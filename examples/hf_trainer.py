"""leantrain under the Hugging Face `Trainer`: `prepare`, then `attach` the handle.

This example *pre-trains* a GPT-2 from scratch, which is where Progressive Layer Dropping
belongs: PLD is a pre-training technique for Pre-LayerNorm models (GPT-2, Llama, RoBERTa-PreLN).
To fine-tune a pretrained checkpoint, leave `progressive_layer_drop` out of the config: a
pretrained model never ran with blocks missing, and a Post-LN one (BERT, RoBERTa, MiniLM) does
not tolerate it (fine-tuning MiniLM on SST-2 with PLD can end at chance accuracy). Random-LTD and
curriculum learning suit fine-tuning too.

    python examples/hf_trainer.py [--steps 20] [--out runs/hf_trainer]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from toy import CONFIG, ByteBlocks, tiny_gpt2
from transformers import Trainer, TrainingArguments

import leantrain
from leantrain.adopt.hf import attach


def train(model: torch.nn.Module, config: Path, dataset: ByteBlocks, *, steps: int, out: Path):
    """Train `steps` optimizer steps with the Trainer; its checkpoints carry the handle's state."""
    # [docs:hf-trainer]
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=1e-3,
        logging_steps=5,
        report_to=[],
        ddp_find_unused_parameters=True,  # under DDP: PLD skips blocks (handle.requirements)
    )
    handle = leantrain.prepare(model, config, dataset,
                               micro_batch_size=args.per_device_train_batch_size,
                               gradient_accumulation_steps=args.gradient_accumulation_steps)  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    attach(trainer, handle)  # steps the schedules, cuts batches, logs θ, r and d, saves the state
    trainer.train()  # or trainer.train(resume_from_checkpoint=True)
    # [/docs:hf-trainer]
    return handle


def main(argv: list[str] | None = None) -> leantrain.LeantrainHandle:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/hf_trainer"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    return train(tiny_gpt2(), CONFIG, ByteBlocks(), steps=args.steps, out=args.out)


if __name__ == "__main__":
    main()
