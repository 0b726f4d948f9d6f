"""The DeepSpeed side of `vs_deepspeed.py`: its engine, and the model side its techniques expect.

DeepSpeed 0.19.7 is imported only inside `deepspeed_setup`, so the module loads without it;
`deepspeed_skip_reason` says why its variants cannot run on a machine. The choices and caveats
(precision, PLD coins and scaling, the keyword adapter, the dense encoder mask) are stated in
`vs_deepspeed.py`'s docstring.
"""

from __future__ import annotations

import argparse
import inspect
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import _harness as harness
import numpy as np
import torch
from _harness import Shape
from torch import nn

from leantrain.models import find_block_list
from leantrain.surgery import add_mixin

__all__ = [
    "DEEPSPEED_VERSION",
    "Setup",
    "Step",
    "build_model",
    "deepspeed_setup",
    "deepspeed_skip_reason",
    "ds_pld_keep_fraction",
    "one_line",
]

DEEPSPEED_VERSION = "0.19.7"
DS_PLD_GAMMA = 100.0
"""γ of DeepSpeed's PLD section: θ(t) = θ̄ to float precision from t = 1 (the third step)."""
_BRANCHES = {"gpt2": ("attn", "mlp"), "bert": ("attention.output.dense", "output.dense")}
"""Per family, the residual branches DeepSpeedExamples' layer-drop block scales by 1/p."""

Step = Callable[[], None]
Setup = Callable[[dict[str, Any]], Step]  # builds model + optimizer, fills info, returns a step


def ds_pld_keep_fraction(num_layers: int, theta: float) -> float:
    """Mean kept fraction of DeepSpeedExamples' rule: layer i kept with 1 − i(1 − θ)/L."""
    return 1 - (1 - theta) * (num_layers - 1) / (2 * num_layers)


def deepspeed_skip_reason(device: torch.device) -> str | None:
    """Why the DeepSpeed variants cannot run here, or None when they can."""
    if device.type != "cuda":
        return "skipped: needs CUDA"
    try:
        import deepspeed
    except Exception as exc:  # ImportError, or a failure of its import-time probes
        if isinstance(exc, ModuleNotFoundError) and exc.name == "deepspeed":
            return "skipped: deepspeed not installed"
        return f"skipped: import deepspeed failed: {one_line(exc)}"
    if deepspeed.__version__ != DEEPSPEED_VERSION:
        return f"skipped: deepspeed {deepspeed.__version__}, needs {DEEPSPEED_VERSION}"
    return None


def one_line(exc: BaseException) -> str:
    """An exception as one short table-safe line: its type and the start of its message."""
    text = " ".join(str(exc).split()).replace("|", "/")
    return f"{type(exc).__name__}: {text[:160]}"


def build_model(shape: Shape, args: argparse.Namespace) -> nn.Module:
    """The model both sides time: `shape` built with seed 0, on `args.device`, in train mode."""
    return harness.build(shape, seed=0, bos_eos_id=0).to(args.device).train()


class _LayerDropGate(nn.Module):
    """One HF block under DeepSpeedExamples' layer-drop rule: identity, or run with 1/p branches."""

    def __init__(self, block: nn.Module, family: str) -> None:
        super().__init__()
        self.block = block
        self.action, self.keep_prob = 1, 1.0
        for path in _BRANCHES[family]:
            block.get_submodule(path).register_forward_hook(self._scale)

    def _scale(self, module: nn.Module, inputs: Any, out: Any) -> Any:
        # the reference's `attention_output * 1 / keep_prob`, kept as written (two passes)
        if isinstance(out, tuple):
            return (out[0] * 1 / self.keep_prob, *out[1:])
        return out * 1 / self.keep_prob

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """The block, or its input when the coin said drop."""
        if self.action == 0:
            return hidden_states
        return self.block(hidden_states, *args, **kwargs)


class _LayerDropModel(nn.Module):
    """Takes the engine's PLD keywords and draws the coins as DeepSpeedExamples' BertEncoder."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        blocks = find_block_list(model).blocks
        for i, block in enumerate(blocks):
            blocks[i] = _LayerDropGate(block, model.config.model_type)
        self.gates: list[_LayerDropGate] = list(blocks)  # type: ignore[arg-type]
        self.theta_seen: float | None = None

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        progressive_layer_drop: bool = False,
        pld_theta: float = 1.0,
    ) -> Any:
        """Draw one numpy coin per block (keep 1 − i·step, scale 1/(1 − (i+1)·step)), then run."""
        if progressive_layer_drop:
            self.theta_seen = float(pld_theta)
            step = (1 - pld_theta) / len(self.gates)
            p = 1.0
            for gate in self.gates:
                gate.action = int(np.random.choice([1, 0], p=[p, 1 - p]))
                p = p - step
                gate.keep_prob = float(p)
        return self.model(input_ids=input_ids, labels=labels)


class _KeywordBlock(nn.Module):
    """Calls its block with every argument but the hidden states as a keyword.

    DeepSpeed's `RandomLayerTokenDrop.forward(hidden_states, **kwargs)` takes keywords only and
    HF 5 passes positionals. `dense_mask` (encoder layers that drop tokens) replaces a None
    attention mask by an all-True [B, 1, S, S] one, which DeepSpeed's encoder path requires.
    """

    def __init__(self, block: nn.Module, masks: dict[tuple[Any, ...], torch.Tensor]) -> None:
        super().__init__()
        self.layer = block
        params = inspect.signature(block.forward).parameters.values()
        self._names = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD][1:]
        self._masks = masks
        self.dense_mask = False

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Name the positionals, add the dense mask where needed, call the (wrapped) block."""
        kwargs.update(zip(self._names, args, strict=False))
        if self.dense_mask and kwargs.get("attention_mask") is None:
            b, s = hidden_states.shape[:2]
            key = (b, s, hidden_states.device)
            if key not in self._masks:
                self._masks[key] = torch.ones(b, 1, s, s, dtype=torch.bool, device=key[2])
            kwargs["attention_mask"] = self._masks[key]
        return self.layer(hidden_states, **kwargs)


def _random_ltd_section(shape: Shape) -> dict[str, Any]:
    """DeepSpeed's `data_efficiency` section: random-LTD on layers 1..L−2, fixed at S/2."""
    half = shape.seq // 2
    ltd = {
        "enabled": True,
        "total_layer_num": shape.layers,
        "random_ltd_layer_num": shape.layers - 2,
        "random_ltd_layer_id": list(range(1, shape.layers - 1)),
        "model_mask_name": "attention_mask",
        "model_type": "encoder" if shape.family == "bert" else "decoder",
        "hidden_state_order": "batch_seq_dim",
        "random_ltd_schedule": {
            "min_value": half,
            "max_value": half,
            "schedule_type": "fixed_linear",
            "schedule_config": {"require_steps": 1, "seq_per_step": 8},
        },
        "layer_token_lr_schedule": {"enabled": False},
    }
    return {"enabled": True, "data_routing": {"enabled": True, "random_ltd": ltd}}


def _single_process_group_env() -> None:
    """What `deepspeed.initialize` needs for a one-process group without a launcher."""
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")


def _ds_config(shape: Shape, args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": shape.batch,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 0.0,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(args.dtype)
    if dtype and args.ds_precision == "autocast":
        config["torch_autocast"] = {"enabled": True, "dtype": dtype}
    elif dtype:
        config[args.dtype] = {"enabled": True}
    return config


def deepspeed_setup(shape: Shape, args: argparse.Namespace, technique: str) -> Setup:
    """A setup for DeepSpeed's engine: "base", "pld", "ltd" or "skip"."""

    def setup(info: dict[str, Any]) -> Step:
        import deepspeed
        from deepspeed.runtime.data_pipeline.data_routing.helper import (
            convert_to_random_ltd as ds_convert_to_random_ltd,
        )

        _single_process_group_env()
        model = build_model(shape, args)
        config = _ds_config(shape, args)
        adapters: list[_KeywordBlock] = []
        block_cls: type[nn.Module] = nn.Module
        if technique == "pld":
            np.random.seed(0)
            model = _LayerDropModel(model)
            config["progressive_layer_drop"] = {
                "enabled": True,
                "theta": args.theta,
                "gamma": DS_PLD_GAMMA,
            }
        elif technique == "ltd":
            blocks = find_block_list(model).blocks
            block_cls = type(blocks[0])
            masks: dict[tuple[Any, ...], torch.Tensor] = {}
            adapters = [_KeywordBlock(block, masks) for block in blocks]
            for i, adapter in enumerate(adapters):
                blocks[i] = adapter
            config["data_efficiency"] = _random_ltd_section(shape)
        elif technique == "skip":
            for block in find_block_list(model).blocks:
                add_mixin(block, harness.SkipBlockMixin)
        fused = torch.device(args.device).type == "cuda"
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
        engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=config)
        if technique == "ltd":
            ds_convert_to_random_ltd(engine, block_cls)
            for adapter in adapters:  # only the layers that drop tokens
                wrapped = getattr(adapter.layer, "random_ltd_scheduler", None) is not None
                adapter.dense_mask = shape.family == "bert" and wrapped
            start = time.perf_counter()
            from deepspeed.ops.op_builder import RandomLTDBuilder

            RandomLTDBuilder().load()  # JIT build (or cached load) before timing
            info["ltd_ops_load_s"] = time.perf_counter() - start
            info["reserved"] = engine.random_ltd_scheduler.get_current_seq()
        device = torch.device(args.device)

        def step() -> None:
            ids = torch.randint(0, shape.vocab, (shape.batch, shape.seq), device=device)  # [B, S]
            loss = engine(input_ids=ids, labels=ids).loss
            engine.backward(loss)
            engine.step()

        def close() -> None:
            if technique == "pld":
                info["theta"] = model.theta_seen
            if hasattr(engine, "destroy"):
                engine.destroy()

        info["close"] = close
        return step

    return setup
