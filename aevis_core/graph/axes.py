"""Feature-map axis of every traced node: which axis of a layer's output indexes its feature maps.

A feature map is one slice along the *channel axis* ``c`` of a layer output ``a`` (N, ...): the
channels of a convolution (N, C, H, W) -> c = 1, the features of a channels-last ``Linear`` /
``LayerNorm`` (N, H, W, C) as in ConvNeXt -> c = 3, the embedding dimensions of a token × dim
output of an attention block (N, T, D) -> c = 2 (each dimension is a map over the tokens), the
neurons of an MLP (N, F) -> c = 1. The axis is propagated through the fx graph from the input
(channels-first, c = 1) with rules keyed by module type and traced shapes:

* convolutions, batch / group / instance norms: c = 1;
* ``Linear`` / ``F.linear`` / ``x @ W`` (W a constant) / ``Embedding``: the last axis;
* ``permute`` / ``transpose`` / ``movedim`` move c; ``view`` / ``reshape`` / ``flatten`` keep it
  when some output axis has the same size and the same number of elements before it;
* indexing, reductions (``mean(dim)``), ``cat`` / ``stack`` / ``chunk`` / ``unbind`` and pooling
  shift or keep it, or lose it when they consume that axis;
* any other op whose output has the shape of its (broadcast) inputs keeps the axis they agree on.

Everything else is *unmapped* (``None``, with the reason): the product of two input-dependent
tensors (attention scores), reshapes that split the channel axis (attention heads), outputs
whose first axis is not the batch. Nothing is guessed: unmapped nodes have no feature maps.
Values that do not depend on the input (parameters, constants) have no axis and are ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from aevis_core.graph.ops import function_name

Axis = int | None
#: axis of a node's value: one axis for a tensor, a tuple of axes for a tuple of tensors
Layout = Axis | tuple[Axis, ...]

_FIRST = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
          nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm1d,
          nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm)
_LAST = (nn.Linear, nn.Bilinear, nn.Embedding)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
         nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
         nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d)
_FIRST_FUNCS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "batch_norm",
                "instance_norm", "group_norm"}
_RESHAPES = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "expand", "expand_as",
             "view_as", "reshape_as", "contiguous", "clone", "to", "float", "double", "half", "type_as",
             "detach", "identity", "flip", "roll"}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod",
           "nanmean", "nansum", "median", "argmax", "argmin"}
_CAT = {"cat", "concat", "concatenate", "hstack"}


def _shape(n: Any) -> tuple[int, ...] | None:
    tm = n.meta.get("tensor_meta") if isinstance(n, fx.Node) else None
    return tuple(int(s) for s in tm.shape) if isinstance(tm, TensorMetadata) else None


def _arg(n: fx.Node, i: int, name: str, default: Any = None) -> Any:
    if len(n.args) > i:
        return n.args[i]
    return n.kwargs.get(name, default)


def _dims(v: Any, rank: int) -> list[int] | None:
    """Normalised dims from an int / list of ints (None when not plain ints)."""
    seq = list(v) if isinstance(v, list | tuple) else [v]
    if not all(isinstance(d, int) for d in seq):
        return None
    return [d % rank if rank else d for d in seq]


def _reshaped(a: int, src: tuple[int, ...], out: tuple[int, ...]) -> Axis:
    """Axis of ``out`` holding the channel axis ``a`` of ``src`` after a reshape, if it survives whole."""
    before = math.prod(src[:a])
    for k, s in enumerate(out):
        if s == src[a] and math.prod(out[:k]) == before:
            return k
    return None


def _index(a: int, idx: Any, rank: int) -> tuple[Axis, str]:
    """Channel axis after ``x[idx]`` (basic indexing only)."""
    items = list(idx) if isinstance(idx, tuple) else [idx]
    if any(i is Ellipsis for i in items):
        e = items.index(Ellipsis)
        used = sum(1 for i in items if i is not None and i is not Ellipsis)
        items = items[:e] + [slice(None)] * (rank - used) + items[e + 1:]
    items += [slice(None)] * (rank - sum(1 for i in items if i is not None))
    dim = out = 0
    for it in items:
        if it is None:
            out += 1
            continue
        if dim == a:
            if isinstance(it, slice):
                return out, ""
            return None, "indexing selects inside the feature-map axis"
        if isinstance(it, int):
            dim += 1
        elif isinstance(it, slice):
            dim += 1
            out += 1
        else:
            return None, "advanced (tensor) indexing"
    return None, "indexing"


class AxisInference:
    """Propagates the channel axis through ``gm`` (shapes from ShapeProp with batch ``batch``)."""

    def __init__(self, gm: fx.GraphModule, batch: int) -> None:
        self.modules = dict(gm.named_modules())
        self.batch = batch
        self.layout: dict[fx.Node, Layout] = {}
        self.reason: dict[fx.Node, str] = {}
        self.dependent: set[fx.Node] = set()  # nodes whose tensor value depends on the input
        for n in gm.graph.nodes:
            self._visit(n)

    def axis(self, n: fx.Node) -> Axis:
        """Channel axis of a tensor node (with batch at 0); None when unmapped or not a tensor."""
        v = self.layout.get(n)
        return v if isinstance(v, int) else None

    def _visit(self, n: fx.Node) -> None:
        if n.op == "placeholder":
            self.dependent.add(n)
            shp = _shape(n)
            self._set(n, 1 if shp is not None and len(shp) >= 2 else None, "input without a batch axis")
            return
        if n.op in ("output", "get_attr"):
            return
        ins = [a for a in n.all_input_nodes if a in self.dependent]
        tm = n.meta.get("tensor_meta")
        tensors = isinstance(tm, TensorMetadata) or (
            isinstance(tm, list | tuple) and any(isinstance(t, TensorMetadata) for t in tm))
        if not ins or not tensors:
            return  # a constant, or a non-tensor value (x.size(0)): no layout
        self.dependent.add(n)
        lay, why = self._rule(n, ins)
        shp = _shape(n)
        if lay is not None and shp is not None and (not shp or shp[0] != self.batch):
            lay, why = None, "the batch is not its first axis"
        self._set(n, lay, why)

    def _set(self, n: fx.Node, lay: Layout, why: str) -> None:
        self.layout[n] = lay
        if lay is None or (isinstance(lay, tuple) and None in lay):
            self.reason[n] = why or "unknown op"

    def _in(self, ins: Sequence[fx.Node]) -> tuple[Axis, tuple[int, ...] | None]:
        first = ins[0]
        return self.axis(first), _shape(first)

    def _rule(self, n: fx.Node, ins: list[fx.Node]) -> tuple[Layout, str]:
        shp = _shape(n)
        a, src = self._in(ins)
        if n.op == "call_module":
            mod = self.modules.get(str(n.target))
            return self._module(mod, n, ins, shp, a, src)
        name = function_name(n.target)
        if name == "getitem":
            return self._getitem(n, ins[0])
        if shp is None:
            return self._tuple(n, name, a, src)
        if name in _FIRST_FUNCS:
            return 1, ""
        if name == "linear":
            return len(shp) - 1, ""
        if name in ("matmul", "mm", "bmm"):
            if len(ins) == 1 and n.args and n.args[0] is ins[0]:
                return len(shp) - 1, ""
            return None, "product of two input-dependent tensors (e.g. attention scores)"
        if name == "layer_norm":
            return (a if a is not None else len(shp) - 1), ""
        if a is None or src is None:
            return None, self.reason.get(ins[0], "input has no feature-map axis")
        if name == "permute":
            perm = _dims(n.args[1:] if len(n.args) > 2 else _arg(n, 1, "dims"), len(src))
            return (perm.index(a), "") if perm else (None, "permute")
        if name in ("transpose", "swapaxes", "swapdims"):
            d = _dims([_arg(n, 1, "dim0"), _arg(n, 2, "dim1")], len(src))
            if d is None:
                return None, name
            return (d[1] if a == d[0] else d[0] if a == d[1] else a), ""
        if name in ("movedim", "moveaxis"):
            s, t = _dims(_arg(n, 1, "source"), len(src)), _dims(_arg(n, 2, "destination"), len(src))
            if s is None or t is None:
                return None, name
            probe = torch.empty(tuple(range(1, len(src) + 1)), device="meta")  # distinct sizes = axis ids
            order = [d - 1 for d in torch.movedim(probe, s, t).shape]
            return order.index(a), ""
        if name in _RESHAPES:
            k = _reshaped(a, src, shp)
            return (k, "") if k is not None else (None, "a reshape splits or merges the feature-map axis")
        if name == "pad":  # padding keeps the axes (channel padding adds maps on the same axis)
            return (a, "") if len(src) == len(shp) else (None, "pad")
        if name in _REDUCE:
            return self._reduce(n, a, src, shp)
        if name in _CAT:
            axes = {self.axis(i) for i in ins}
            return (a, "") if len(axes) == 1 else (None, "concatenation of different layouts")
        if name == "stack":
            d = _dims(_arg(n, 1, "dim", 0), len(shp))
            axes = {self.axis(i) for i in ins}
            if d is None or len(axes) != 1:
                return None, "stack"
            return (a + 1 if d[0] <= a else a), ""
        if re.fullmatch(r"(adaptive_)?(avg|max|lp)_pool[123]d", name):
            k = int(name[-2])
            return (a, "") if a < len(src) - k else (None, "pooling over the feature-map axis")
        return self._generic(name, ins, shp)

    def _generic(self, name: str, ins: list[fx.Node], shp: tuple[int, ...]) -> tuple[Layout, str]:
        """Shape-preserving / broadcasting ops keep the axis their inputs agree on (from the end)."""
        ends = set()
        for i in ins:
            ai, si = self.axis(i), _shape(i)
            if ai is None or si is None:
                return None, self.reason.get(i, f"{name}: input has no feature-map axis")
            ends.add(ai - len(si))
        if len(ends) != 1:
            return None, f"{name} mixes different layouts"
        k = len(shp) + ends.pop()
        srcs = [_shape(i) for i in ins]
        if any(s == shp for s in srcs):
            return k, ""
        src = srcs[0]
        if src is not None and len(src) == len(shp) and src[k] == shp[k] and src[0] == shp[0]:
            return k, ""  # resampling / padding of the other axes
        return None, f"{name} changes the shape {src} -> {shp}"

    def _module(self, mod: nn.Module | None, n: fx.Node, ins: list[fx.Node], shp: tuple[int, ...] | None,
                a: Axis, src: tuple[int, ...] | None) -> tuple[Layout, str]:
        if isinstance(mod, nn.MultiheadAttention):
            if not mod.batch_first:
                return (None, None), "the batch is not its first axis (batch_first=False)"
            return (2, None), "attention weights"
        if shp is None:
            return None, "module returns a non-tensor"
        if mod is None:
            return None, "unknown module"
        if isinstance(mod, _FIRST + _LAST + _POOL + (nn.LayerNorm,)):
            return module_axis(mod, a, src, shp)
        if a is None or src is None:
            return None, self.reason.get(ins[0], "input has no feature-map axis")
        if isinstance(mod, nn.Flatten | nn.Unflatten):
            k = _reshaped(a, src, shp)
            return (k, "") if k is not None else (None, "flatten merges the feature-map axis")
        return self._generic(type(mod).__name__, ins, shp)

    def _reduce(self, n: fx.Node, a: int, src: tuple[int, ...], shp: tuple[int, ...]) -> tuple[Layout, str]:
        dim = _arg(n, 1, "dim")
        if dim is None:
            return None, "full reduction"
        dims = _dims(dim, len(src))
        if dims is None or a in dims:
            return None, "reduction over the feature-map axis"
        keep = bool(_arg(n, 2, "keepdim", False))
        return (a if keep else a - sum(1 for d in dims if d < a)), ""

    def _tuple(self, n: fx.Node, name: str, a: Axis, src: tuple[int, ...] | None) -> tuple[Layout, str]:
        """Tuple-valued ops: one axis per element."""
        tm = n.meta.get("tensor_meta")
        count = len(tm) if isinstance(tm, list | tuple) else 0
        if a is None or src is None or count == 0:
            return None, "non-tensor value"
        if name in ("chunk", "split", "tensor_split", "split_with_sizes"):
            return tuple([a] * count), ""
        if name == "unbind":
            d = _dims(_arg(n, 1, "dim", 0), len(src))
            if d is None or d[0] == a:
                return None, "unbind along the feature-map axis"
            return tuple([a - 1 if d[0] < a else a] * count), ""
        if name in ("max", "min", "sort", "topk", "median", "mode"):
            lay, why = self._reduce(n, a, src, src) if name in ("max", "min", "median", "mode") else (None, name)
            pair: tuple[Axis, ...] = (lay if isinstance(lay, int) else None, None)
            return pair, why
        return None, f"{name} returns several values"

    def _getitem(self, n: fx.Node, src_node: fx.Node) -> tuple[Layout, str]:
        lay = self.layout.get(src_node)
        idx = n.args[1] if len(n.args) > 1 else None
        if isinstance(lay, tuple):
            if isinstance(idx, int) and -len(lay) <= idx < len(lay):
                return lay[idx], self.reason.get(src_node, "element without a feature-map axis")
            return None, "tuple element"
        src = _shape(src_node)
        if lay is None or src is None:
            return None, self.reason.get(src_node, "indexing a value without a feature-map axis")
        return _index(lay, idx, len(src))


def module_axis(mod: nn.Module, a: Axis, src: tuple[int, ...] | None, shp: tuple[int, ...]) -> tuple[Axis, str]:
    """Channel axis (batch at 0) of a module's output ``shp`` from the module type and the axis ``a``
    of its input ``src`` (the hook fallback, where the data flow is only known as a call chain)."""
    if isinstance(mod, _FIRST):
        return 1, ""
    if isinstance(mod, _LAST):
        return len(shp) - 1, ""
    if isinstance(mod, nn.LayerNorm):
        return (a if a is not None and src == shp else len(shp) - 1), ""
    if a is None or src is None:
        return None, "its input has no feature-map axis"
    if isinstance(mod, _POOL):
        k = int(re.sub(r"\D", "", type(mod).__name__) or 2)
        return (a, "") if a < len(src) - k else (None, "pooling over the feature-map axis")
    if src == shp:
        return a, ""
    if len(src) == len(shp) and src[a] == shp[a]:
        return a, ""
    return None, f"{type(mod).__name__} changes the shape {src} -> {shp}"
