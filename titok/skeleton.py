"""Build a model's skeleton on the meta device without touching PyTorch's compiler stack.

On the meta device many operations (random factories such as ``torch.randn``, ``scale * tensor``, in-place
initialisers such as ``normal_``) run PyTorch's Python meta kernels, whose first call imports ``torch._dynamo`` and
the compiler stack (~3 s, most of the time it takes to load a small model). Their values are never computed on meta
tensors anyway, so inside :func:`skeleton` random factories become ``torch.empty``, elementwise arithmetic returns an
empty tensor of the broadcast shape, and in-place initialisers do nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode

_RANDOM_FACTORIES = {torch.randn, torch.rand, torch.randint, torch.randperm, torch.normal}
_FACTORY_OPTIONS = ("dtype", "layout", "requires_grad")
_ELEMENTWISE = {
    *(getattr(torch.Tensor, f"__{op}__") for op in ("mul", "rmul", "add", "radd", "sub", "rsub", "truediv", "neg")),
    *(getattr(torch.Tensor, f"__{op}__") for op in ("rtruediv", "pow")),
    torch.mul,
    torch.add,
    torch.sub,
    torch.div,
    torch.Tensor.mul,
    torch.Tensor.add,
    torch.Tensor.sub,
    torch.Tensor.div,
    torch.Tensor.float,
    torch.Tensor.to,
    torch.Tensor.clone,
    torch.Tensor.detach,
}


def _size(func, args, kwargs) -> tuple:
    if func is torch.randint:  # randint(high, size) or randint(low, high, size)
        return tuple(kwargs.get("size", args[-1]))
    if func is torch.randperm:
        return (args[0],)
    if func is torch.normal:  # normal(mean, std, size)
        return tuple(kwargs.get("size", args[2]))
    size = kwargs.get("size", args)
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else tuple(size)


def _broadcast(shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """NumPy broadcasting (``torch.broadcast_shapes`` imports the symbolic-shapes machinery)."""
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + s for s in shapes]
    out = []
    for dims in zip(*padded):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise RuntimeError(f"shapes {shapes} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _elementwise(func, args, kwargs) -> torch.Tensor:
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    shape = _broadcast([tuple(t.shape) for t in tensors])
    dtype = torch.result_type(*args[:2]) if len(args) > 1 and func not in (torch.Tensor.to,) else tensors[0].dtype
    if func in (torch.Tensor.to, torch.Tensor.float):
        dtype = kwargs.get("dtype") or next((a for a in args[1:] if isinstance(a, torch.dtype)), None)
        dtype = torch.float32 if func is torch.Tensor.float else dtype or tensors[0].dtype
    return torch.empty(shape, dtype=dtype, device="meta")


class _SkipInit(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RANDOM_FACTORIES and not (args and isinstance(args[0], torch.Tensor)):
            options = {k: kwargs[k] for k in _FACTORY_OPTIONS if k in kwargs}
            if func in (torch.randint, torch.randperm):
                options.setdefault("dtype", torch.int64)
            return torch.empty(_size(func, args, kwargs), device="meta", **options)
        if func in _ELEMENTWISE and any(isinstance(a, torch.Tensor) and a.is_meta for a in args):
            return _elementwise(func, args, kwargs)
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
        if name.endswith("_") and not name.endswith("__") and isinstance(target, torch.Tensor) and target.is_meta:
            return target  # an in-place initialiser on a meta tensor: nothing to compute
        return func(*args, **kwargs)


@contextlib.contextmanager
def skeleton() -> Iterator[None]:
    """Modules built inside have meta parameters of the right shapes and dtypes and no values; load a state dict
    into them with ``load_state_dict(..., assign=True)``."""
    with torch.device("meta"), _SkipInit():
        yield
