"""Classify torch.fx nodes and modules into layer kinds (conv, bn, act, add, pool, ...)."""

from __future__ import annotations

import operator
from typing import Any

from torch import nn

from aevis_core.models.base import CallableNormalize, Normalize

#: Modules that are pass-through for the layer graph (their output equals a neighbour's).
PASS_MODULES: tuple[type[nn.Module], ...] = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout1d,
                                             nn.AlphaDropout, nn.Flatten, Normalize, CallableNormalize)
#: Shape-only functions / methods that are pass-through too.
PASS_NAMES = frozenset({
    "flatten", "view", "reshape", "contiguous", "squeeze", "unsqueeze", "clone", "to", "float",
    "type_as", "detach", "dropout", "identity", "size", "permute", "transpose", "swapaxes", "swapdims",
    "movedim", "moveaxis", "expand", "expand_as", "view_as", "reshape_as", "unflatten",
})
#: Modules that always stay leaves when tracing (parametric ones and our normaliser).
LEAF_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d,
                                           nn.Linear, nn.Embedding, Normalize, CallableNormalize)

_MODULE_KINDS: list[tuple[tuple[type[nn.Module], ...], str]] = [
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d), "conv"),
    ((nn.Linear,), "linear"),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
      nn.InstanceNorm2d), "bn"),
    ((nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
      nn.LeakyReLU, nn.ELU, nn.PReLU, nn.Mish, nn.Softplus, nn.Hardtanh), "act"),
    ((nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool1d,
      nn.AvgPool1d, nn.AdaptiveAvgPool1d), "pool"),
]

_FUNC_KINDS: dict[str, str] = {
    "add": "add", "iadd": "add", "sub": "sub", "mul": "mul", "imul": "mul", "matmul": "linear",
    "cat": "cat", "concat": "cat", "relu": "act", "relu_": "act", "relu6": "act", "silu": "act",
    "gelu": "act", "sigmoid": "act", "tanh": "act", "hardtanh": "act", "hardswish": "act",
    "leaky_relu": "act", "elu": "act", "softmax": "act", "adaptive_avg_pool2d": "pool",
    "avg_pool2d": "pool", "max_pool2d": "pool", "mean": "pool", "linear": "linear",
    "conv2d": "conv", "pad": "pad", "getitem": "slice", "batch_norm": "bn", "layer_norm": "bn",
    "group_norm": "bn", "instance_norm": "bn", "stack": "cat",
}


def module_kind(mod: nn.Module) -> str:
    """Layer kind of a leaf module (``module`` when unknown)."""
    for types, kind in _MODULE_KINDS:
        if isinstance(mod, types):
            return kind
    return "module"


def function_name(target: Any) -> str:
    """Plain name of a call_function / call_method target (``operator.add`` -> ``add``)."""
    if isinstance(target, str):
        return target
    if target in (operator.add, operator.iadd):
        return "add"
    return getattr(target, "__name__", str(target))


def function_kind(target: Any) -> str:
    """Layer kind of a call_function / call_method node."""
    return _FUNC_KINDS.get(function_name(target).rstrip("_") or "", _FUNC_KINDS.get(function_name(target), "other"))


def is_inplace(target: Any, mod: nn.Module | None = None) -> bool:
    """Whether a node overwrites its input (``relu_``, ``operator.iadd``, ``ReLU(inplace=True)``)."""
    if mod is not None:
        return bool(getattr(mod, "inplace", False))
    if target in (operator.iadd, operator.imul, operator.isub, operator.itruediv):
        return True
    name = function_name(target)
    return name.endswith("_") and not name.startswith("_")
