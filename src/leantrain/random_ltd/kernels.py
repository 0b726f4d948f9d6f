"""Fused Triton gather/scatter for random-LTD routing, with the plain torch path as fallback.

Why. Counted in full-size row passes (N = B·S rows of D values; M = B·r kept rows), per converted
layer call, the plain path (`routing.gather_tokens` / `scatter_tokens`) moves on a GPU:
- forward: `index_select` reads and writes M rows; the out-of-place `index_copy` first clones
  the whole residual stream (read N, write N), then copies M rows in: 2N + 4M;
- backward: `index_copy`'s backward is `index_fill` (a full clone, read N + write N, then M row
  writes) plus an `index_select` (2M); `index_select`'s backward writes N zeros and then
  `index_add_`s the M kept-row gradients with atomics (slow in bf16); autograd then adds the two
  full-size gradients of the layer input (read 2N, write N): 6N + 6M, about 9N at r = S/2, and a
  string of small launches. With the block itself running at r < S, these passes and launches
  are what kept a plain argsort-gather → block → scatter at ~53% of the theoretical saving.

What is fused (indices are unique per sample, so every kernel is deterministic, no atomics):
- an inverse map `slot[row]` = kept slot of that row or -1, a [N] int32 tensor built once per
  layer call on the device (`inverse_index`) and shared by the scatter's forward and backward;
- gather forward (`gather_rows`): kept[m] = x[flat[m]], one pass over the M kept rows: 2M;
- scatter forward (`merge_rows`): out[n] = y[slot[n]] if kept else x[n]; x is read only at
  dropped rows and y at kept ones, the output written once: 2N;
- scatter backward (`split_rows`): one read of the output gradient g writes both
  dx[n] = 0 if kept else g[n] and dy[slot[n]] = g[n]: 2N + M;
- gather backward, folded (`add_rows_`): the two gradients of the layer input meet in one
  autograd node instead of autograd's full-size add. The gather returns the layer input itself
  as a second output (the skip path, an alias: no copy), and only the scatter consumes it, so the
  gather's backward receives both the kept-token gradient [M, D] and the scatter's fresh dx
  [N, D]; it adds the M kept rows into dx in place (dx is zero there) and returns it: 3M.
Total: forward 2N + 2M (plain: 2N + 4M), backward 2N + 4M (plain: 6N + 6M plus atomics), and
four launches plus the tiny index work. The slot map costs 4 bytes per row.

Compile. Fusing the backward needs an autograd.Function whose output aliases its input and
whose backward writes into an incoming gradient; `torch.library.custom_op` forbids aliasing
outputs, and AOTAutograd's handling of either is version-dependent. So the fused entry points
(`routing.gather_route` / `scatter_route`) are `torch.compiler.disable`d: under torch.compile
they run eagerly between compiled regions, which needs nothing version-specific (tested on torch
2.13). A converted block already breaks its graph at the token draw, so the gather adds no
break, and the scatter one at the very end of the block. `LEANTRAIN_RANDOM_LTD_KERNELS=torch`
keeps the plain ops inside the compiled graph instead, for inductor to generate and fuse its own.

Dispatch (`kernel_backend`): `LEANTRAIN_RANDOM_LTD_KERNELS` = auto (default: Triton for CUDA
tensors when triton imports, else torch) | torch | triton (forced; CPU tensors then need
Triton's interpreter, `TRITON_INTERPRET=1`). The jitted kernels are built on first use, once per
interpreter setting, because `triton.jit` reads TRITON_INTERPRET when it decorates. They use
only triton's builtins, no `@jit` helpers of its standard library (`tl.zeros_like`, ...): those
are decorated when triton is imported, and then fail under an interpreter switched on later.
"""

from __future__ import annotations

import importlib.util
import os
from types import SimpleNamespace
from typing import Any, Literal

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from leantrain.errors import ConfigError

__all__ = [
    "KERNELS_ENV",
    "Backend",
    "add_rows_",
    "fused_gather",
    "fused_scatter",
    "gather_rows",
    "interpreting",
    "inverse_index",
    "kernel_backend",
    "merge_rows",
    "split_rows",
]

KERNELS_ENV = "LEANTRAIN_RANDOM_LTD_KERNELS"
Backend = Literal["torch", "triton"]
_CHOICES = ("auto", "torch", "triton")
#: Whether triton is installed, looked up without importing it (CPU wheels of torch lack it).
_HAS_TRITON = importlib.util.find_spec("triton") is not None
_TILE = 4096  # values per program: ROWS × BLOCK (not tuned on a GPU yet)
_MAX_BLOCK = 256  # columns per program; D = 768 is three blocks, 1024 four
_BUILT: dict[bool, SimpleNamespace] = {}


def interpreting() -> bool:
    """Whether Triton's interpreter is on (TRITON_INTERPRET), which runs kernels on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def kernel_backend(device: torch.device) -> Backend:
    """Which routing kernels serve tensors on `device`, from `LEANTRAIN_RANDOM_LTD_KERNELS`.

    Read on every call, so a test or a benchmark can switch it between runs.
    """
    choice = os.environ.get(KERNELS_ENV, "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ConfigError(f"{KERNELS_ENV}: got {choice!r}; expected one of {', '.join(_CHOICES)}")
    if choice == "torch":
        return "torch"
    if choice == "auto":
        return "triton" if device.type == "cuda" and _HAS_TRITON else "torch"
    if not _HAS_TRITON:
        raise ConfigError(f"{KERNELS_ENV}=triton: triton is not installed (pip install triton)")
    if device.type != "cuda" and not interpreting():
        raise ConfigError(
            f"{KERNELS_ENV}=triton: the kernels run on CUDA; {device.type} tensors need Triton's "
            "interpreter (TRITON_INTERPRET=1)"
        )
    return "triton"


def _build() -> SimpleNamespace:
    """Import triton and jit the four row kernels (lazily: importing leantrain needs no triton)."""
    import triton
    import triton.language as tl

    @triton.jit
    def gather_kernel(src, index, dst, rows, cols, ROWS: tl.constexpr, BLOCK: tl.constexpr):
        """dst[m] = src[index[m]] for one [ROWS, BLOCK] tile of kept rows m."""
        m = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # [ROWS]
        c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
        live = (m < rows)[:, None] & (c < cols)[None, :]  # [ROWS, BLOCK]
        src_row = tl.load(index + m, mask=m < rows, other=0).to(tl.int64)  # [ROWS]
        vals = tl.load(src + src_row[:, None] * cols + c[None, :], mask=live)
        tl.store(dst + m.to(tl.int64)[:, None] * cols + c[None, :], vals, mask=live)

    @triton.jit
    def add_kernel(dst, index, src, rows, cols, ROWS: tl.constexpr, BLOCK: tl.constexpr):
        """dst[index[m]] += src[m] for one tile of kept rows m (unique targets: no atomics)."""
        m = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # [ROWS]
        c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
        live = (m < rows)[:, None] & (c < cols)[None, :]  # [ROWS, BLOCK]
        dst_row = tl.load(index + m, mask=m < rows, other=0).to(tl.int64)  # [ROWS]
        vals = tl.load(src + m.to(tl.int64)[:, None] * cols + c[None, :], mask=live)
        target = dst + dst_row[:, None] * cols + c[None, :]
        old = tl.load(target, mask=live)
        if old.dtype.primitive_bitwidth < 32:  # half types: add in fp32, round once, as torch
            tl.store(target, (old.to(tl.float32) + vals.to(tl.float32)).to(old.dtype), mask=live)
        else:
            tl.store(target, old + vals, mask=live)

    @triton.jit
    def merge_kernel(x, y, slot, out, rows, cols, ROWS: tl.constexpr, BLOCK: tl.constexpr):
        """out[n] = y[slot[n]] where slot[n] >= 0, else x[n], for one tile of rows n."""
        n = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # [ROWS]
        c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
        s = tl.load(slot + n, mask=n < rows, other=-1)  # [ROWS]
        kept = (s >= 0)[:, None]  # [ROWS, 1]
        live = (n < rows)[:, None] & (c < cols)[None, :]  # [ROWS, BLOCK]
        cell = n.to(tl.int64)[:, None] * cols + c[None, :]
        kept_cell = tl.maximum(s, 0).to(tl.int64)[:, None] * cols + c[None, :]
        from_y = tl.load(y + kept_cell, mask=live & kept)
        from_x = tl.load(x + cell, mask=live & ~kept)
        tl.store(out + cell, tl.where(kept, from_y, from_x), mask=live)

    @triton.jit
    def split_kernel(g, slot, dx, dy, rows, cols, ROWS: tl.constexpr, BLOCK: tl.constexpr):
        """dx[n] = 0 if row n is kept else g[n]; dy[slot[n]] = g[n] if kept: one read of g."""
        n = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # [ROWS]
        c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
        s = tl.load(slot + n, mask=n < rows, other=-1)  # [ROWS]
        kept = (s >= 0)[:, None]  # [ROWS, 1]
        live = (n < rows)[:, None] & (c < cols)[None, :]  # [ROWS, BLOCK]
        cell = n.to(tl.int64)[:, None] * cols + c[None, :]
        vals = tl.load(g + cell, mask=live)
        tl.store(dx + cell, tl.where(kept, 0.0, vals), mask=live)
        kept_cell = tl.maximum(s, 0).to(tl.int64)[:, None] * cols + c[None, :]
        tl.store(dy + kept_cell, vals, mask=live & kept)

    return SimpleNamespace(
        gather=gather_kernel, add=add_kernel, merge=merge_kernel, split=split_kernel
    )


def _kernels() -> SimpleNamespace:
    """The jitted kernels for the current TRITON_INTERPRET setting, built on first use."""
    key = interpreting()
    if key not in _BUILT:
        _BUILT[key] = _build()
    return _BUILT[key]


def _launch(kernel: Any, rows: int, cols: int, *tensors: Tensor) -> None:
    """Run a row kernel over a [rows, cols] grid of tiles (nothing to do for an empty one)."""
    if rows == 0 or cols == 0:
        return
    block = min(1 << (cols - 1).bit_length(), _MAX_BLOCK)  # next power of two, capped
    tile_rows = max(1, _TILE // block)
    grid = (-(-rows // tile_rows), -(-cols // block))
    kernel[grid](*tensors, rows, cols, ROWS=tile_rows, BLOCK=block)


def _check_rows(what: str, t: Tensor, rows: int, cols: int) -> None:
    """Refuse a buffer that is not a contiguous [rows, cols] matrix (the kernels' layout)."""
    if t.shape != (rows, cols) or not t.is_contiguous():
        raise ValueError(
            f"{what}: expected a contiguous [{rows}, {cols}] tensor, got {tuple(t.shape)} "
            f"with strides {t.stride()}"
        )


def inverse_index(flat: Tensor, rows: int) -> Tensor:
    """Slot [rows] (int32) of each row in `flat` [M] (unique row numbers), -1 where absent."""
    slots = torch.arange(flat.numel(), device=flat.device, dtype=torch.int32)  # [M]
    return torch.full((rows,), -1, device=flat.device, dtype=torch.int32).scatter_(0, flat, slots)


def gather_rows(src: Tensor, index: Tensor, out: Tensor) -> Tensor:
    """out[m] = src[index[m]]: `src` [N, D], `index` [M] unique rows, `out` [M, D]; returns out."""
    _check_rows("gather_rows src", src, src.shape[0], src.shape[-1])
    _check_rows("gather_rows out", out, index.numel(), src.shape[1])
    _launch(_kernels().gather, index.numel(), src.shape[1], src, index.contiguous(), out)
    return out


def add_rows_(dst: Tensor, index: Tensor, src: Tensor) -> Tensor:
    """dst[index[m]] += src[m] in place: `dst` [N, D], `index` [M] unique, `src` [M, D]."""
    _check_rows("add_rows_ dst", dst, dst.shape[0], dst.shape[-1])
    _check_rows("add_rows_ src", src, index.numel(), dst.shape[1])
    _launch(_kernels().add, index.numel(), dst.shape[1], dst, index.contiguous(), src)
    return dst


def merge_rows(x: Tensor, y: Tensor, slot: Tensor, out: Tensor) -> Tensor:
    """out[n] = y[slot[n]] where slot[n] >= 0, else x[n]: `x`, `out` [N, D], `y` [M, D]."""
    rows, cols = x.shape[0], x.shape[-1]
    _check_rows("merge_rows x", x, rows, cols)
    _check_rows("merge_rows y", y, y.shape[0], cols)
    _check_rows("merge_rows out", out, rows, cols)
    _launch(_kernels().merge, rows, cols, x, y, slot.contiguous(), out)
    return out


def split_rows(g: Tensor, slot: Tensor, dx: Tensor, dy: Tensor) -> tuple[Tensor, Tensor]:
    """dx = g with kept rows zeroed, dy[slot[n]] = g[n]: the scatter's backward in one pass."""
    rows, cols = g.shape[0], g.shape[-1]
    _check_rows("split_rows g", g, rows, cols)
    _check_rows("split_rows dx", dx, rows, cols)
    _check_rows("split_rows dy", dy, dy.shape[0], cols)
    _launch(_kernels().split, rows, cols, g, slot.contiguous(), dx, dy)
    return dx, dy


class _GatherKept(torch.autograd.Function):
    """kept = x[flat], plus x itself as the skip path, so that one backward folds both grads."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, flat: Tensor) -> tuple[Tensor, Tensor]:
        """Gather the kept rows of `x` [N, D]; return them [M, D] and `x` (an alias, no copy)."""
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(flat)
        ctx.shape = x.shape
        kept = gather_rows(x, flat, x.new_empty(flat.numel(), x.shape[1]))  # [M, D]
        return kept, x

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, g_kept: Tensor | None, g_skip: Tensor | None
    ) -> tuple[Tensor | None, None]:
        """Add the kept-row gradient [M, D] into the skip gradient [N, D], in place.

        `g_skip` is the dx that `_ScatterKept.backward` just allocated (the skip output has no
        other consumer), so writing into it is safe and saves a full-size add.
        """
        if g_kept is None:
            return g_skip, None
        (flat,) = ctx.saved_tensors
        if g_skip is None:
            g_skip = g_kept.new_zeros(ctx.shape)
        return add_rows_(g_skip.contiguous(), flat, g_kept.contiguous()), None


class _ScatterKept(torch.autograd.Function):
    """out = x with the kept rows replaced by y, through the inverse map `slot`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, slot: Tensor, shape: torch.Size) -> Tensor:
        """Merge `y` [M, D] into `x` [N, D] in one pass into a new tensor of `shape` (N·D values;
        a tensor of its own, not a view: FSDP2 warns about blocks that return views)."""
        ctx.save_for_backward(slot)
        ctx.kept_rows = y.shape[0]
        out = x.new_empty(shape)
        merge_rows(x, y, slot, out.view(x.shape))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor, None, None]:
        """Split the output gradient (N·D values) into dx [N, D] (kept rows zero), dy [M, D]."""
        (slot,) = ctx.saved_tensors
        g = g.contiguous().view(slot.numel(), -1)  # [N, D]
        dx, dy = torch.empty_like(g), g.new_empty(ctx.kept_rows, g.shape[1])
        return (*split_rows(g, slot, dx, dy), None, None)


def fused_gather(x: Tensor, flat: Tensor) -> tuple[Tensor, Tensor]:
    """Kept rows [M, D] of `x` [N, D] and the skip path to hand to `fused_scatter` (autograd)."""
    return _GatherKept.apply(x.contiguous(), flat)


def fused_scatter(
    skip: Tensor, kept: Tensor, slot: Tensor, shape: torch.Size | None = None
) -> Tensor:
    """`skip` [N, D] (from `fused_gather`) with its kept rows replaced by `kept` [M, D], as a new
    tensor of `shape` (default [N, D])."""
    return _ScatterKept.apply(skip, kept.contiguous(), slot, shape or skip.shape)
