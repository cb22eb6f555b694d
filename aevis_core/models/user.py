"""User models: ``file.py:factory``, ``package.module:factory`` and ``torchvision:<name>``.

A factory is a zero-argument callable returning a :class:`~aevis_core.models.base.ModelSpec`
(or a dict of its fields). Weight files named by the spec are read with ``weights_only=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from aevis_core.errors import ModelLoadError
from aevis_core.models.base import ModelEntry, ModelSpec, wrap
from aevis_core.models.weights import load_state_dict_file, read_state_dict


def _within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _load_factory(spec: str, model_dir: Path | None) -> tuple[Callable[[], Any], Path | None]:
    """Resolve ``file.py:name`` or ``pkg.mod:name`` to the callable (and the file's folder)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise ModelLoadError(f"bad model spec {spec!r}: expected file.py:factory or package.module:factory")
    base: Path | None = None
    if target.endswith(".py"):
        path = Path(target)
        if model_dir is not None:
            path = path if path.is_absolute() else model_dir / path
            if not _within(path, model_dir):
                raise ModelLoadError(f"model file {target!r} is outside the model directory {model_dir}")
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {target}")
        mod_name = f"aevis_user_model_{abs(hash(str(path.resolve())))}"
        ispec = importlib.util.spec_from_file_location(mod_name, path)
        if ispec is None or ispec.loader is None:
            raise ModelLoadError(f"cannot import model file {target}")
        module = importlib.util.module_from_spec(ispec)
        sys.modules[mod_name] = module
        try:
            ispec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - user code may raise anything
            raise ModelLoadError(f"importing {target} failed: {type(exc).__name__}: {exc}") from exc
        base = path.resolve().parent
    else:
        if model_dir is not None:
            raise ModelLoadError("only model files inside the model directory are allowed here")
        try:
            module = importlib.import_module(target)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot import module {target!r}: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ModelLoadError(f"{target} has no callable named {attr!r}")
    return fn, base


def _as_spec(obj: Any, where: str) -> ModelSpec:
    if isinstance(obj, ModelSpec):
        spec = obj
    elif isinstance(obj, dict):
        try:
            spec = ModelSpec(**obj)
        except TypeError as exc:
            raise ModelLoadError(f"{where} returned a dict that is not a ModelSpec: {exc}") from exc
    else:
        raise ModelLoadError(
            f"{where} returned {type(obj).__name__}, expected aevis_core.models.ModelSpec (or a dict of its fields)"
        )
    if not isinstance(spec.module, nn.Module):
        raise ModelLoadError(f"{where}: ModelSpec.module is {type(spec.module).__name__}, expected torch.nn.Module")
    if len(spec.input_size) != 2 or not spec.class_names:
        raise ModelLoadError(f"{where}: ModelSpec needs input_size (H, W) and a non-empty class_names")
    return spec


def load_factory_model(spec: str, model_dir: Path | None = None) -> ModelEntry:
    """Load ``file.py:factory`` / ``package.module:factory`` as a :class:`ModelEntry`."""
    fn, base = _load_factory(spec, model_dir)
    try:
        obj = fn()
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"model factory {spec} failed: {type(exc).__name__}: {exc}") from exc
    mspec = _as_spec(obj, f"model factory {spec}")
    if mspec.weights:
        wpath = Path(mspec.weights)
        if not wpath.is_absolute() and base is not None:
            wpath = base / wpath
        if model_dir is not None and not _within(wpath, model_dir):
            raise ModelLoadError(f"weights file {mspec.weights!r} is outside the model directory")
        load_state_dict_file(mspec.module, wpath, strip_prefix=mspec.strip_prefix)
    return wrap(mspec, spec)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def load_torchvision_model(name: str) -> ModelEntry:
    """``torchvision:<name>`` with its default ImageNet weights from the local torch hub cache only.

    Any failure of the optional source (not installed, an import that raises — e.g. a CUDA build
    of torchvision next to a CPU torch —, an unknown name, weights that do not load) is one
    :class:`ModelLoadError` line.
    """
    try:
        import torchvision  # noqa: F401
        from torch.hub import get_dir
        from torchvision import models as tvm
    except ImportError as exc:
        raise ModelLoadError("torchvision is not installed; torchvision:<name> models need it") from exc
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything (RuntimeError, OSError, ...)
        raise ModelLoadError(f"torchvision cannot be imported ({_first_line(exc)})") from exc
    try:
        weights = tvm.get_model_weights(name).DEFAULT
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"unknown torchvision model {name!r}") from exc
    file = Path(get_dir()) / "checkpoints" / Path(weights.url).name
    if not file.is_file():
        raise ModelLoadError(
            f"torchvision:{name} weights are not in the local cache ({file}); AEVis never downloads at run time"
        )
    try:
        net = tvm.get_model(name, weights=None)
        net.load_state_dict(read_state_dict(file))
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"torchvision:{name} cannot be built from {file.name} ({_first_line(exc)})") from exc
    from aevis_core.resources import imagenet_classes

    spec = ModelSpec(net, (224, 224), list(imagenet_classes()), mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225), resize=256)
    return wrap(spec, f"torchvision:{name}", dataset="imagenet")
