"""Adapter between AdaptiveSelector and the CUDA kernel (``llkd.selection._selection_cuda``).

The logits stay on their device: the kernel reads them in place (through
``__cuda_array_interface__``), and only O(n_classes) numbers (levels, thresholds,
error flags) come back to the host, once per step, after a synchronisation of the
current stream. Labels and confidences may be CUDA tensors (checked inside the
kernel's pass over the rows) or host arrays (checked on the host, then copied to the
device). Outputs are tensors on the logits' device: ``uncertainty`` and ``weights``
in the logits' dtype, ``mask`` as ``torch.bool``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from . import _validation
from ._backends import cuda_device_count, cuda_module
from ._contract import FLAGS
from ._state import SelectionResult, SelectorState

# Bits of the kernel's flag word (csrc/selection_contract.hpp).
_BAD_LOGITS, _BAD_LABELS, _BAD_CONFIDENCE = (FLAGS["bad_logits"], FLAGS["bad_labels"], FLAGS["bad_confidence"])

_TYPESTR = {
    torch.float32: "<f4",
    torch.float64: "<f8",
    torch.int32: "<i4",
    torch.int64: "<i8",
}


def _desc(t: torch.Tensor):
    """(pointer, shape, typestr) of a contiguous CUDA tensor: ``Kernel.step_unchecked``'s input."""
    return (t.data_ptr(), tuple(t.shape), _TYPESTR[t.dtype])


_device_seen = False


def _module():
    module = cuda_module()
    if module is None:
        raise ValueError(
            "backend='cuda' requested but llkd was built without its CUDA kernel "
            "(reinstall with a CUDA compiler on the PATH, or LLKD_CUDA=ON to insist)"
        )
    global _device_seen
    if not _device_seen:
        if cuda_device_count() <= 0:
            raise ValueError(
                "backend='cuda' requested but no CUDA device is visible "
                "(llkd.selection._selection_cuda.device_count() == 0); use backend='native' or 'auto'"
            )
        _device_seen = True
    return module


def _as_cuda_tensor(x, name: str):
    """A torch view of a CUDA array, or None for host data."""
    if _validation.is_torch_tensor(x):
        return x.detach() if x.is_cuda else None
    if hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray):
        try:
            return torch.as_tensor(x)  # zero-copy, on the array's device
        except Exception as exc:
            raise TypeError(f"{name}: could not read its __cuda_array_interface__: {exc}") from exc
    return None


def _cuda_logits(logits, n_classes: int | None = None) -> torch.Tensor:
    _module()
    z = _as_cuda_tensor(logits, "student_logits")
    if z is None:
        kind = "a CPU tensor" if _validation.is_torch_tensor(logits) else type(logits).__name__
        raise TypeError(
            f"backend='cuda' needs student_logits on a CUDA device, got {kind}; "
            "move it with .cuda() or use backend='native' or 'auto' for host arrays"
        )
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    if z.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"student_logits must be a float32 or float64 tensor, got dtype {z.dtype}")
    if z.ndim != 2:
        raise ValueError(f"student_logits must be 2-D (batch, n_classes), got shape {tuple(z.shape)}")
    if z.shape[0] == 0:
        raise ValueError("student_logits is empty: a selection step needs at least one sample")
    if n_classes is not None and z.shape[1] != n_classes:
        raise ValueError(
            f"student_logits has {z.shape[1]} columns but the selector was built for n_classes={n_classes}"
        )
    return z if z.is_contiguous() else z.contiguous()


def n_rows(logits) -> int:
    """Rows of a CUDA logits array (validates it like :func:`step`, copies nothing)."""
    return int(_cuda_logits(logits).shape[0])


def _check_same_device(t: torch.Tensor, device: torch.device, name: str) -> None:
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but student_logits is on {device}")


def _labels_on_device(labels, n: int, n_classes: int, device: torch.device) -> torch.Tensor:
    t = _as_cuda_tensor(labels, "pseudo_labels")
    if t is None:  # host data: check here, ship int32
        host = _validation.check_labels(_validation.to_host(labels, "pseudo_labels"), n, n_classes)
        return torch.from_numpy(host.astype(np.int32)).to(device)
    _check_same_device(t, device, "pseudo_labels")
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"pseudo_labels must have shape ({n},) to match student_logits, got {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"pseudo_labels must hold integer class indices, got dtype {t.dtype}")
    if t.dtype.is_floating_point:
        # As on the host: floats are accepted when they are whole numbers.
        if not bool((torch.isfinite(t) & (t == torch.round(t))).all()):
            raise TypeError(f"pseudo_labels must hold integer class indices, got dtype {t.dtype}")
        t = t.long()
    elif t.dtype not in (torch.int32, torch.int64):
        t = t.long()
    return t if t.is_contiguous() else t.contiguous()  # range: checked in the kernel


def _confidence_on_device(confidence, n: int, device: torch.device) -> torch.Tensor:
    t = _as_cuda_tensor(confidence, "teacher_confidence")
    if t is None:
        host = _validation.check_confidence(_validation.to_host(confidence, "teacher_confidence"), n)
        return torch.from_numpy(host).to(device)
    _check_same_device(t, device, "teacher_confidence")
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"teacher_confidence must have shape ({n},) to match student_logits, got {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"teacher_confidence must be a float array, got dtype {t.dtype}")
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    elif not t.dtype.is_floating_point:
        t = t.double()
    return t if t.is_contiguous() else t.contiguous()  # NaN and range: checked in the kernel


def _round8(nbytes: int) -> int:
    return (nbytes + 7) // 8 * 8


def _allocate(n: int, dtype: torch.dtype, device: torch.device, scratch_size: int):
    """Uncertainty, mask, weights and scratch as views of one device allocation.

    Layout (byte offsets multiples of 8): uncertainty | weights | scratch | mask.
    """
    es = torch.empty((), dtype=dtype).element_size()
    o_w = _round8(n * es)
    o_s = o_w + _round8(n * es)
    o_m = o_s + _round8(scratch_size)
    buf = torch.empty(o_m + n, dtype=torch.uint8, device=device)
    u = buf[: n * es].view(dtype)
    w = buf[o_w : o_w + n * es].view(dtype)
    mask = buf[o_m : o_m + n].view(torch.bool)
    return u, mask, w, buf.data_ptr() + o_s, buf


def _current_stream(device: torch.device) -> int:
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw is not None:
        return int(raw(device.index))
    return torch.cuda.current_stream(device).cuda_stream


def _outputs(out, n: int, dtype: torch.dtype, device: torch.device):
    u, mask, w = out
    for name, t, dt in (("uncertainty", u, dtype), ("mask", mask, torch.bool), ("weights", w, dtype)):
        if not (
            _validation.is_torch_tensor(t)
            and t.device == device
            and t.dtype == dt
            and tuple(t.shape) == (n,)
            and t.is_contiguous()
        ):
            raise ValueError(f"out: {name} must be a contiguous {dt} tensor of shape ({n},) on {device}")
    return u, mask, w


def _raise_for_flags(flags: int, labels: torch.Tensor, confidence: torch.Tensor, n: int, n_classes: int):
    # Same order and messages as the host checks; the details are read back only here.
    if flags & _BAD_LABELS:
        _validation.check_labels(labels.cpu().numpy(), n, n_classes)
        raise ValueError(f"pseudo_labels must lie in [0, {n_classes - 1}]")
    if flags & _BAD_CONFIDENCE:
        _validation.check_confidence(confidence.cpu().numpy().astype(np.float64), n)
        raise ValueError("teacher_confidence contains NaN values or values outside [0, 1]")
    if flags & _BAD_LOGITS:
        raise ValueError("student_logits contains NaN or infinite values")
    raise RuntimeError(f"CUDA selection kernel reported unknown error flags {flags:#x}")


@functools.lru_cache(maxsize=64)
def kernel(
    n_classes: int,
    mode: str,
    weighting: str,
    momentum: float,
    fixed_threshold: float,
    random_rate: float,
    variant: int = -1,
):
    """The compiled CUDA ``Kernel`` of one configuration (cached: building one checks it)."""
    return _module().Kernel(n_classes, mode, weighting, momentum, fixed_threshold, random_rate, variant)


def step(
    state: SelectorState,
    logits,
    labels,
    confidence,
    *,
    random_draws: np.ndarray | None,
    update: bool,
    out=None,
    variant: int = -1,
    **config,
) -> SelectionResult:
    """One selection step on the logits' device (see AdaptiveSelector.step).

    ``config`` holds the kernel's parameters (momentum, mode, weighting, fixed_threshold,
    random_rate). ``out`` optionally gives preallocated ``(uncertainty, mask, weights)``
    tensors; ``variant`` picks a row-kernel variant (tests and benchmarks; -1 chooses by
    C). On bad input a ValueError/TypeError is raised and ``state`` is left untouched.
    """
    module = _module()
    n_classes = _validation.check_state(state)
    k = kernel(n_classes, variant=int(variant), **config)
    z = _cuda_logits(logits, n_classes)
    n, device = int(z.shape[0]), z.device
    y = _labels_on_device(labels, n, n_classes, device)
    c = _confidence_on_device(confidence, n, device)
    draws = None
    if config["mode"] == "random":
        if random_draws is None:
            raise ValueError("mode='random' needs random_draws")
        draws = torch.from_numpy(np.ascontiguousarray(random_draws, dtype=np.float64)).to(device)
    scratch_size = module.scratch_bytes(n_classes)
    if out is None:
        u, mask, w, scratch_ptr, _keep = _allocate(n, z.dtype, device, scratch_size)
    else:  # checked here: step_unchecked trusts them
        u, mask, w = _outputs(out, n, z.dtype, device)
        _keep = torch.empty(scratch_size, dtype=torch.uint8, device=device)
        scratch_ptr = _keep.data_ptr()
    try:
        tau_t, tau_s, n_updates = k.step_unchecked(
            _desc(z),
            _desc(y),
            _desc(c),
            None if draws is None else _desc(draws),
            u.data_ptr(),
            mask.data_ptr(),
            w.data_ptr(),
            scratch_ptr,
            scratch_size,
            state.global_levels,
            state.class_levels,
            int(state.n_updates),
            bool(update),
            _current_stream(device),
        )
    except module.InputFlagsError as exc:
        _raise_for_flags(int(exc.flags), y, c, n, n_classes)
    state.n_updates = int(n_updates)
    return SelectionResult(
        mask=mask,
        weights=w,
        uncertainty=u,
        teacher_threshold=tau_t,
        student_threshold=tau_s,
        backend="cuda",
    )
