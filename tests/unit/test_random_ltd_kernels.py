"""Fused Triton routing for random-LTD against the plain torch path, bit for bit.

On CPU the kernels run under Triton's interpreter. The `interpreted` fixture sets
TRITON_INTERPRET=1 (and forces the triton backend) for one test only; this works in any test
order, whoever imported triton first, because `kernels` jits its functions on first use and
caches them per interpreter setting (`triton.jit` reads TRITON_INTERPRET when it decorates), and
the backend switch is read on every call. The whole module skips where triton is not installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from conftest import make_gpt2, make_inputs
from torch import Tensor

from leantrain.errors import ConfigError
from leantrain.random_ltd import (
    KERNELS_ENV,
    RandomLTDScheduler,
    RoutingError,
    convert_to_random_ltd,
    flat_token_index,
    gather_route,
    kept_indices,
    kernel_backend,
    kernels,
    sample_token_indices,
    scatter_route,
)

triton = pytest.importorskip("triton")

FP_FUSION_WARNING = "ignore:TRITON_DEFAULT_FP_FUSION is unset:UserWarning"  # triton 3.9 compiles
CPU = torch.device("cpu")


@pytest.fixture
def interpreted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton's interpreter on and the triton backend forced, for this test only."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(KERNELS_ENV, "triton")


def _randn(*shape: int, dtype: torch.dtype, seed: int) -> Tensor:
    """Standard normal values, never exactly zero, so unwritten or zeroed rows show up."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    return (x + x.sign() * 0.1 + (x == 0)).to(dtype)


def test_backend_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for value, cpu, cuda in [("", "torch", "triton"), ("auto", "torch", "triton")]:
        monkeypatch.setenv(KERNELS_ENV, value)
        assert kernel_backend(CPU) == cpu and kernel_backend(torch.device("cuda")) == cuda
    monkeypatch.setenv(KERNELS_ENV, " Torch ")
    assert kernel_backend(torch.device("cuda")) == "torch"
    monkeypatch.setenv(KERNELS_ENV, "triton")
    assert kernel_backend(torch.device("cuda")) == "triton"
    with pytest.raises(ConfigError, match=f"{KERNELS_ENV}=triton: .*TRITON_INTERPRET=1"):
        kernel_backend(CPU)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernel_backend(CPU) == "triton"
    monkeypatch.setenv(KERNELS_ENV, "auto")
    assert kernel_backend(CPU) == "torch"  # CPU tensors take triton only when forced
    monkeypatch.setenv(KERNELS_ENV, "cuda")
    with pytest.raises(ConfigError, match=f"{KERNELS_ENV}: got 'cuda'; expected one of auto"):
        kernel_backend(CPU)
    monkeypatch.setattr(kernels, "_HAS_TRITON", False)
    monkeypatch.setenv(KERNELS_ENV, "auto")
    assert kernel_backend(torch.device("cuda")) == "torch"
    monkeypatch.setenv(KERNELS_ENV, "triton")
    with pytest.raises(ConfigError, match="triton is not installed"):
        kernel_backend(torch.device("cuda"))


@pytest.mark.usefixtures("interpreted")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cols", [1, 36, 300])  # 300: two column blocks, the second partial
def test_row_kernels_write_every_row(dtype: torch.dtype, cols: int) -> None:
    """Each kernel against its torch definition, on outputs poisoned with NaN beforehand."""
    seed = cols + 7 * dtype.itemsize
    rows, kept = 40, 13  # 40 rows: several row tiles when D = 300
    flat = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))[:kept]  # unsorted
    x = _randn(rows, cols, dtype=dtype, seed=seed)
    y = _randn(kept, cols, dtype=dtype, seed=seed + 1)
    slot = kernels.inverse_index(flat, rows)
    expected = [flat.tolist().index(n) if n in flat.tolist() else -1 for n in range(rows)]
    assert slot.dtype == torch.int32 and slot.tolist() == expected

    def poisoned(n: int) -> Tensor:
        return torch.full((n, cols), float("nan"), dtype=dtype)

    assert torch.equal(kernels.gather_rows(x, flat, poisoned(kept)), x[flat])
    assert torch.equal(kernels.merge_rows(x, y, slot, poisoned(rows)), x.index_copy(0, flat, y))
    dx, dy = kernels.split_rows(x, slot, poisoned(rows), poisoned(kept))
    assert torch.equal(dx, x.index_fill(0, flat, 0)) and torch.equal(dy, x[flat])
    # Sums exact in every dtype: the interpreter truncates fp32 -> bf16 (a GPU rounds to nearest).
    xq, yq = ((t.float() * 8).round().clamp(-64, 64) / 8 for t in (x, y))
    xq, yq = xq.to(dtype), yq.to(dtype)
    assert torch.equal(kernels.add_rows_(xq.clone(), flat, yq), xq.index_add(0, flat, yq))
    with pytest.raises(ValueError, match=r"gather_rows out: expected a contiguous \[13, "):
        kernels.gather_rows(x, flat, poisoned(2 * kept)[::2])


def _route_step(
    x: Tensor, idx: Tensor, w: Tensor, grad: Tensor, batch_first: bool
) -> tuple[Tensor, ...]:
    """Gather, a stand-in block (kept · w), scatter; returns kept, output and both gradients."""
    x = x.detach().requires_grad_(True)
    w = w.detach().requires_grad_(True)
    kept, route = gather_route(x, idx, batch_first=batch_first)
    out = scatter_route(route, kept * w)
    assert out._base is None  # a tensor of its own: FSDP2 warns about blocks returning views
    out.backward(grad)
    assert x.grad is not None and w.grad is not None
    return kept.detach(), out.detach(), x.grad, w.grad


CASES = [  # batch, seq, reserved, hidden size, input contiguous
    (2, 7, 3, 36, True),
    (3, 6, 1, 5, False),  # r = 1, transposed input
    (2, 5, 5, 36, False),  # r = S
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_route_matches_torch_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[int, int, int, int, bool],
    batch_first: bool,
    dtype: torch.dtype,
) -> None:
    b, s, r, d, contiguous = case
    seed = b * 1000 + s * 100 + r * 10 + int(batch_first) + dtype.itemsize
    lead = (b, s) if batch_first else (s, b)
    x = _randn(*lead, d, dtype=dtype, seed=seed)
    if not contiguous:  # same values, transposed storage
        x = x.transpose(0, 1).contiguous().transpose(0, 1)
    idx = sample_token_indices(b, s, r, generator=torch.Generator().manual_seed(seed))
    kept_shape = (b, r, d) if batch_first else (r, b, d)
    w = _randn(*kept_shape, dtype=dtype, seed=seed + 1)
    grad = _randn(*lead, d, dtype=dtype, seed=seed + 2)
    monkeypatch.setenv(KERNELS_ENV, "torch")
    ref = _route_step(x, idx, w, grad, batch_first)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(KERNELS_ENV, "triton")
    got = _route_step(x, idx, w, grad, batch_first)
    for name, a, e in zip(("kept", "out", "x.grad", "w.grad"), got, ref, strict=True):
        assert a.shape == e.shape and a.dtype == e.dtype, name
        assert torch.equal(a, e), name
    kept, route = gather_route(x, idx, batch_first=batch_first)
    assert route.slot is not None
    with pytest.raises(RoutingError, match="does not match"):
        scatter_route(route, kept[..., :2])


@pytest.mark.usefixtures("interpreted")
def test_fused_route_gradcheck_float64() -> None:
    idx = torch.tensor([[0, 2], [1, 3]])
    x = _randn(2, 4, 3, dtype=torch.float64, seed=0).requires_grad_(True)
    w = _randn(2, 2, 3, dtype=torch.float64, seed=1).requires_grad_(True)

    def routed(x: Tensor, w: Tensor) -> Tensor:
        kept, route = gather_route(x, idx)
        return scatter_route(route, torch.tanh(kept) * w)

    assert torch.autograd.gradcheck(routed, (x, w))


@pytest.fixture
def count_kernel_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Count calls of the gather (forward) and split (backward) launchers."""
    calls = {"gather_rows": 0, "split_rows": 0}
    for name in calls:
        real: Callable[..., Any] = getattr(kernels, name)

        def counted(*args: Any, _real: Callable[..., Any] = real, _name: str = name) -> Any:
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(kernels, name, counted)
    yield calls


def _train_one_step(backend: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Tensor]:
    """One SGD step of a converted tiny GPT-2 (blocks 1–2 drop to 8 of 16 tokens)."""
    monkeypatch.setenv(KERNELS_ENV, backend)
    torch.manual_seed(0)
    model = make_gpt2()
    schedule = {
        "min_value": 8,
        "max_value": 64,
        "schedule_config": {"require_steps": 10, "seq_per_step": 4},
    }
    config = {"random_ltd_schedule": schedule, "global_batch_size": 3}
    convert_to_random_ltd(model, RandomLTDScheduler(config))
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs = make_inputs("gpt2")
    torch.manual_seed(1)
    loss = model(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    assert all(v is not None and v.shape == (3, 8) for v in kept_indices(model).values())
    result = {"loss": loss.detach()}
    result.update({f"grad/{n}": p.grad for n, p in model.named_parameters() if p.grad is not None})
    optimizer.step()
    result.update({f"param/{n}": p.detach() for n, p in model.named_parameters()})
    return result


def test_gpt2_trains_one_step_identically(
    monkeypatch: pytest.MonkeyPatch, count_kernel_calls: dict[str, int]
) -> None:
    ref = _train_one_step("torch", monkeypatch)
    assert count_kernel_calls == {"gather_rows": 0, "split_rows": 0}
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    got = _train_one_step("triton", monkeypatch)
    assert count_kernel_calls == {"gather_rows": 2, "split_rows": 2}  # two converted blocks
    assert got.keys() == ref.keys()
    for key in ref:
        assert torch.equal(got[key], ref[key]), key


# Dynamo's own graph building touches `.grad` of non-leaf tensors, which warns.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_fused_route_under_torch_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused calls run eagerly between compiled regions; results equal the eager torch path."""
    idx = sample_token_indices(2, 6, 3, generator=torch.Generator().manual_seed(0))
    x, w, grad = (_randn(2, 6, 4, dtype=torch.float32, seed=s) for s in (1, 2, 3))
    w = w[:, :3]

    def block_on_kept(x: Tensor, w: Tensor) -> Tensor:
        kept, route = gather_route(x, idx)
        return scatter_route(route, torch.tanh(kept) * w)

    def run(fn: Callable[[Tensor, Tensor], Tensor]) -> tuple[Tensor, ...]:
        xs, ws = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        out = fn(xs, ws)
        out.backward(grad)
        assert xs.grad is not None and ws.grad is not None
        return out.detach(), xs.grad, ws.grad

    monkeypatch.setenv(KERNELS_ENV, "torch")
    ref = run(block_on_kept)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(KERNELS_ENV, "triton")
    torch._dynamo.reset()
    try:
        got = run(torch.compile(block_on_kept, backend="aot_eager", dynamic=False))
    finally:
        torch._dynamo.reset()
    for a, e in zip(got, ref, strict=True):
        assert torch.equal(a, e)


@pytest.mark.filterwarnings(FP_FUSION_WARNING)
def test_kernels_compile_for_sm90_without_atomics(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real Triton compiler (not the interpreter) builds each kernel for an H100 (sm_90):
    no atomics, and 16-byte vector loads and stores when D is a multiple of 16, as at launch."""
    compiler = pytest.importorskip("triton.compiler")
    target = pytest.importorskip("triton.backends.compiler").GPUTarget("cuda", 90, 32)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    k = kernels._kernels()
    val = "*bf16"
    args = {
        k.gather: {"src": val, "index": "*i64", "dst": val},
        k.add: {"dst": val, "index": "*i64", "src": val},
        k.merge: {"x": val, "y": val, "slot": "*i32", "out": val},
        k.split: {"g": val, "slot": "*i32", "dx": val, "dy": val},
    }
    for fn, pointers in args.items():
        signature = {**pointers, "rows": "i32", "cols": "i32", "ROWS": "constexpr"}
        signature["BLOCK"] = "constexpr"
        aligned = {
            (i,): [["tt.divisibility", 16]] for i in (*range(len(pointers)), len(pointers) + 1)
        }
        try:
            source = compiler.ASTSource(
                fn=fn, signature=signature, constexprs={"ROWS": 16, "BLOCK": 256}, attrs=aligned
            )
        except TypeError as err:  # older triton: positional signatures
            pytest.skip(f"triton {triton.__version__}: another ASTSource API ({err})")
        ptx = triton.compile(source, target=target).asm["ptx"]
        assert "atom." not in ptx and "red." not in ptx
        assert re.search(r"ld\.global\.v4", ptx) and re.search(r"st\.global\.v4", ptx)


@pytest.mark.gpu
@pytest.mark.filterwarnings(FP_FUSION_WARNING)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch_first", [True, False])
def test_cuda_kernels_match_torch(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, batch_first: bool
) -> None:
    """GPT-2-small routing shapes on the GPU: the compiled kernels equal the torch path."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    b, s, r, d = 4, 1024, 512, 768
    lead = (b, s) if batch_first else (s, b)
    cuda = torch.device("cuda")
    x = _randn(*lead, d, dtype=dtype, seed=0).to(cuda)
    w = _randn(*((b, r, d) if batch_first else (r, b, d)), dtype=dtype, seed=1).to(cuda)
    grad = _randn(*lead, d, dtype=dtype, seed=2).to(cuda)
    idx = sample_token_indices(b, s, r, device=cuda)
    monkeypatch.setenv(KERNELS_ENV, "torch")
    ref = _route_step(x, idx, w, grad, batch_first)
    monkeypatch.setenv(KERNELS_ENV, "triton")
    got = _route_step(x, idx, w, grad, batch_first)
    for a, e in zip(got, ref, strict=True):
        assert torch.equal(a, e)
    flat = flat_token_index(idx, s, batch_first=batch_first)
    assert torch.equal(got[0].reshape(-1, d), x.reshape(-1, d)[flat])
