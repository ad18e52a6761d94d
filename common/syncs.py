"""Host-device syncs counted: where a step would make the host wait for the accelerator.

    with SyncCounter() as c:
        train_step(...)
    c.count, c.events   # each event: the op and the line of our code that made it

A GPU runs its queue of kernels while Python prepares the next ones; anything that needs a
value from the device (``.item()``, ``bool(t)``, ``.tolist()``, ``.cpu()``), an op whose output
shape depends on the data (``nonzero``, boolean masks, ``bincount``, ``unique``) or a copy from
pageable host memory makes the host wait until the queue has drained, and the Python overhead
stops being hidden. This module records those as they are dispatched (a TorchDispatchMode), so
it counts the same on a real GPU and, with no GPU at all, on the ``meta`` device: tensors with
shapes and no data. On ``meta`` the synced values do not exist, so the counter makes them up
(0, False, empty results, zero-filled host copies) and the step runs on to its end; what it
computes then is meaningless, only the count is.

What counts, on a tensor that is not on the CPU (CPU work never waits for a device):
  - ``aten._local_scalar_dense``: ``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, ``if t:``;
  - data-dependent shapes: ``nonzero``, ``masked_select``, ``bincount``, ``unique``,
    ``repeat_interleave`` without ``output_size``, indexing with a boolean mask;
  - a copy between the CPU and the device (``.to``, ``.cpu()``, ``.tolist()``, ``copy_``),
    unless it is non-blocking from or into pinned host memory (queued, not waited for), or it
    is made by a function named in ``allow`` (a caller vouches for it: e.g. the loader's one
    host-to-device copy, pinned and non-blocking on CUDA, a plain copy on ``meta``);
  - ``torch.tensor(data, device=...)`` / ``torch.as_tensor(data, device=...)`` of host data on
    the device: a pageable copy made below the dispatcher, so the counter wraps those two
    functions while it is active;
  - a host tensor (not a 0-dim scalar) given to an op on device tensors, e.g. indexing a device
    tensor with host indices: the op copies it to the device first.
Syncs that torch makes inside one op's kernel (e.g. a fused optimiser's checks) are not seen;
``torch.cuda.set_sync_debug_mode`` sees those on a real GPU.
"""
from __future__ import annotations

import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten
_ROOT = Path(__file__).resolve().parent.parent  # the repository: frames outside it are torch's
_TORCH = Path(torch.__file__).resolve().parent
_THIS = Path(__file__).resolve()

# Ops whose output size depends on the values (packet name, as dispatched).
_DATA_DEPENDENT = {"nonzero", "nonzero_static", "masked_select", "bincount", "unique", "_unique",
                   "_unique2", "unique_dim", "unique_consecutive", "unique_dim_consecutive"}
_COPIES = {"_to_copy", "copy_", "copy"}


@dataclass(frozen=True)
class SyncEvent:
    """One sync: what made it (the op, or a short reason) and where (file:line function: code)."""

    op: str
    where: str

    def __str__(self) -> str:
        return f"{self.op} at {self.where}"


def _on_device(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type != "cpu"


def _frames() -> list[traceback.FrameSummary]:
    """The caller's stack, innermost first, without this module's and torch's own frames."""
    out = []
    for f in reversed(traceback.extract_stack()):
        path = Path(f.filename).resolve()
        if path == _THIS or path.is_relative_to(_TORCH) or not path.is_relative_to(_ROOT):
            continue
        out.append(f)
    return out


def _where(frames: list[traceback.FrameSummary]) -> str:
    if not frames:
        return "(outside the repository)"
    f = frames[0]
    return f"{_rel(f)}:{f.lineno} {f.name}: {(f.line or '').strip()}"


def _rel(frame: traceback.FrameSummary) -> str:
    """The frame's file relative to the repository, with forward slashes on any system."""
    return Path(frame.filename).resolve().relative_to(_ROOT).as_posix()


class SyncCounter(TorchDispatchMode):
    """Record every host-device sync dispatched while active (see the module docstring).

    ``allow``: "path:function" names (e.g. "common/loader.py:to_device") whose host-device
    copies are not counted: the caller states that these are pinned and non-blocking where the
    device has pinned memory. Only copies can be allowed; ``.item()`` and friends always count.
    """

    def __init__(self, allow: Iterable[str] = ()) -> None:
        super().__init__()
        self.allow = tuple(allow)
        self.events: list[SyncEvent] = []
        self._saved: dict[str, Any] = {}

    @property
    def count(self) -> int:
        return len(self.events)

    def report(self) -> str:
        """One line per sync, for a failing test or a printed summary."""
        return "\n".join(f"  {e}" for e in self.events) or "  (none)"

    # ------------------------------------------------------------------ recording

    def _record(self, op: str, copy: bool = False) -> None:
        frames = _frames()
        if copy and any(f"{_rel(f)}:{f.name}" in self.allow for f in frames):
            return
        self.events.append(SyncEvent(op, _where(frames)))

    def __enter__(self) -> SyncCounter:
        super().__enter__()
        # torch.tensor / as_tensor copy host data to the device below the dispatcher: wrap them
        for name in ("tensor", "as_tensor"):
            original = getattr(torch, name)
            self._saved[name] = original

            def wrapped(data: Any, *args: Any, _original: Any = original, _name: str = name,
                        **kwargs: Any) -> torch.Tensor:
                out = _original(data, *args, **kwargs)
                already_there = isinstance(data, torch.Tensor) and data.device == out.device
                if out.device.type != "cpu" and not already_there:
                    self._record(f"torch.{_name}(host data, device={out.device.type})", copy=True)
                return out

            setattr(torch, name, wrapped)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, original in self._saved.items():
            setattr(torch, name, original)
        self._saved.clear()
        super().__exit__(*exc)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if func is aten._local_scalar_dense.default and _on_device(args[0]):
            self._record(".item() / bool() / float() of a device tensor")
            if args[0].device.type == "meta":  # no value exists: make one up so the step goes on
                return False if args[0].dtype == torch.bool else 0 if not args[0].is_floating_point() else 0.0
            return func(*args, **kwargs)
        if name in _COPIES:
            return self._copy(func, name, args, kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if any(_on_device(t) for t in tensors) and any(t.device.type == "cpu" and t.ndim for t in tensors):
            self._record(f"aten.{name} given a host tensor (copied to the device first)", copy=True)
        if self._data_dependent(name, tensors, args, kwargs):
            self._record(f"aten.{name} (output size depends on the data)")
            if any(t.device.type == "meta" for t in tensors):
                return _meta_stand_in(func, name, args, kwargs)
        return func(*args, **kwargs)

    @staticmethod
    def _data_dependent(name: str, tensors: list[torch.Tensor], args: tuple, kwargs: dict) -> bool:
        if not any(_on_device(t) for t in tensors):
            return False
        if name in _DATA_DEPENDENT:
            return True
        if name == "repeat_interleave":
            return kwargs.get("output_size") is None
        if name in ("index", "index_put", "index_put_", "_index_put_impl_"):  # x[mask]
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)
        return False

    def _copy(self, func: Any, name: str, args: tuple, kwargs: dict) -> Any:
        if name == "_to_copy":
            src = args[0]
            dst_device = torch.device(kwargs["device"]) if kwargs.get("device") is not None else src.device
            host = src if dst_device.type != "cpu" else None  # the host side of the copy
            crosses = (src.device.type == "cpu") != (dst_device.type == "cpu")
            pinned_ok = kwargs.get("non_blocking", False) and (host is not None and host.is_pinned()
                                                                or kwargs.get("pin_memory", False))
        else:  # copy_(dst, src, non_blocking)
            dst, src = args[0], args[1]
            dst_device = dst.device
            crosses = isinstance(src, torch.Tensor) and (src.device.type == "cpu") != (dst.device.type == "cpu")
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
            host = src if dst.device.type != "cpu" else dst
            pinned_ok = non_blocking and isinstance(host, torch.Tensor) and host.is_pinned()
        if crosses and not pinned_ok:
            direction = "device -> host" if dst_device.type == "cpu" else "host -> device"
            self._record(f"aten.{name} {direction} (pageable or blocking)", copy=True)
        if crosses and src.device.type == "meta":  # no data to copy out: zeros of the right shape
            if name == "_to_copy":
                return torch.zeros(src.shape, dtype=kwargs.get("dtype") or src.dtype, device="cpu")
            return args[0]
        return func(*args, **kwargs)


def _meta_stand_in(func: Any, name: str, args: tuple, kwargs: dict) -> Any:
    """A result of the right rank for a data-dependent op on ``meta``: as if nothing matched."""
    x = args[0]
    if name in ("nonzero", "nonzero_static"):
        return torch.empty(0, x.ndim, dtype=torch.long, device=x.device)
    if name == "masked_select":
        return torch.empty(0, dtype=x.dtype, device=x.device)
    if name == "bincount":
        minlength = kwargs.get("minlength", args[2] if len(args) > 2 else 0)
        dtype = torch.double if kwargs.get("weights", args[1] if len(args) > 1 else None) is not None else torch.long
        return torch.zeros(max(minlength, 1), dtype=dtype, device=x.device)
    if name == "repeat_interleave":
        return torch.empty(0, dtype=x.dtype, device=x.device)
    if name in ("index", "index_put", "index_put_", "_index_put_impl_"):
        # every boolean mask selects nothing: an empty long index per masked dimension
        indices = []
        for i in args[1]:
            if isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8):
                indices += [torch.empty(0, dtype=torch.long, device=x.device)] * i.ndim
            else:
                indices.append(i)
        return func(x, indices, *args[2:], **kwargs)
    return x.flatten()[:0]  # unique and friends: nothing found
