"""PLD under DDP and FSDP2: two gloo ranks draw the same coins without talking and stay in sync.

The test launches this file under `torch.distributed.run` (2 processes); `_worker` is the
per-rank program. Each rank feeds different data, as data parallelism does.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

STEPS = 6
FIRST_STEP = 2000  # θ(2000) ≈ 0.57 with γ = 0.001; the coins skip layers from step 2002
WATCHDOG_S = 150  # a healthy launch takes 5-40 s, even on 2 loaded cores


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run this file on 2 gloo ranks. A rank still running after WATCHDOG_S dumps its Python
    stacks to stderr and exits, so a stall fails the test with the stacks in its message."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--nnodes",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        __file__,
    ]
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=2 * WATCHDOG_S)
    except subprocess.TimeoutExpired as err:  # the launcher itself hung: show what it printed
        out = "".join(_text(o)[-4000:] for o in (err.stdout, err.stderr))
        raise AssertionError(f"2-rank launch still running after {err.timeout} s:\n{out}") from None


def _text(output: str | bytes | None) -> str:
    """TimeoutExpired carries bytes even from a text-mode run."""
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


@pytest.mark.distributed
@pytest.mark.parametrize("wrapper", ["ddp", "fsdp2"])
def test_ranks_skip_the_same_layers_and_stay_identical(tmp_path: Path, wrapper: str) -> None:
    env = {
        **os.environ,
        "PLD_DIST_OUT": str(tmp_path),
        "PLD_DIST_WRAPPER": wrapper,
        "OMP_NUM_THREADS": "1",
    }
    proc = _launch(env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["kept"] == ranks[1]["kept"]
    assert len(ranks[0]["kept"]) == STEPS
    assert any(not all(kept) for kept in ranks[0]["kept"])  # some layer was skipped
    assert ranks[0]["params"] == ranks[1]["params"]
    assert ranks[0]["params_changed"] and ranks[0]["losses"] != ranks[1]["losses"]


def _worker() -> None:
    """One rank: convert a tiny GPT-2, wrap it (DDP or FSDP2), train a few steps, report."""
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from conftest import make_gpt2, make_inputs

    from leantrain.pld import ProgressiveLayerDrop, convert_to_progressive_layer_drop, kept_layers

    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)  # a stall shows where it is
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts them)
    model = make_gpt2()
    pld = ProgressiveLayerDrop(theta=0.5, gamma=0.001, seed=42)
    convert_to_progressive_layer_drop(model, pld).train()
    before = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    if os.environ["PLD_DIST_WRAPPER"] == "ddp":
        wrapped = DistributedDataParallel(model, find_unused_parameters=True)
    else:  # FSDP2: shard each block, then the root (after the surgery)
        for block in model.transformer.h:
            fully_shard(block)
        wrapped = fully_shard(model)
    opt = torch.optim.AdamW(wrapped.parameters(), lr=1e-2)
    kept, losses = [], []
    for step in range(STEPS):
        pld.update_state(FIRST_STEP + step)
        inputs = make_inputs("gpt2", seed=100 * rank + step)
        loss = wrapped(**inputs, labels=inputs["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        kept.append(list(kept_layers(model) or ()))
        losses.append(loss.item())
    after = torch.cat([_full(p).detach().flatten() for p in model.parameters()])
    result = {
        "kept": kept,
        "losses": losses,
        "params": [round(v, 6) for v in after[::7].tolist()],
        "params_changed": not torch.equal(before, after),
    }
    gathered: list[torch.Tensor] = [torch.empty_like(after) for _ in range(2)]
    dist.all_gather(gathered, after)
    result["params_bitwise_equal"] = torch.equal(gathered[0], gathered[1])
    Path(os.environ["PLD_DIST_OUT"], f"rank{rank}.json").write_text(json.dumps(result))
    # Free DDP before destroying the group. DDP's C++ Reducer owns a reference to the gloo
    # group and pybind11 frees the Reducer with the GIL held; as the group's last owner it would
    # join gloo's worker threads under the GIL while one may still be freeing the all_gather's
    # work, whose tensors need the GIL: a deadlock at `_worker`'s return (1 DDP launch in ~10
    # on 2 loaded cores). Freed first, the last owner is the group's Python handle, whose
    # destructor releases the GIL.
    del wrapped, opt
    gc.collect()
    dist.destroy_process_group()
    if not result["params_bitwise_equal"]:
        sys.exit(3)


def _full(param: Any) -> Any:
    """The whole parameter: FSDP2 shards it into a DTensor."""
    return param.full_tensor() if hasattr(param, "full_tensor") else param


if __name__ == "__main__":
    _worker()
