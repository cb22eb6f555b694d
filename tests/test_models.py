"""Model zoo and user models: accuracy on demo sets, pixel-space wrapping, one-line errors."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest
import torch

from aevis_core.errors import ModelLoadError
from aevis_core.models import ZOO, list_models, load_model


def test_zoo_lists_three_models():
    assert [m[0] for m in list_models()] == ["efficientnet-lite0", "cifar-resnet20", "cifar-resnet56"]
    assert set(ZOO) == {"efficientnet-lite0", "cifar-resnet20", "cifar-resnet56"}


def accuracy(entry, images, labels):
    _, pred = entry.predict(entry.preprocess_many(images))
    return (pred == torch.tensor(labels)).float().mean().item()


def test_cifar_resnets_accuracy(resnet20, resnet56, cifar_demo):
    assert resnet20.input_size == (32, 32) and resnet20.num_classes == 10
    assert accuracy(resnet20, cifar_demo.images, cifar_demo.labels) >= 0.75
    assert accuracy(resnet56, cifar_demo.images, cifar_demo.labels) >= 0.75


def test_efficientnet_lite0_accuracy_and_preprocessing(lite0, nips_demo):
    assert lite0.input_size == (224, 224) and lite0.num_classes == 1000
    x = lite0.preprocess(nips_demo.images[0])
    assert x.shape == (3, 224, 224) and 0.0 <= x.min() and x.max() <= 1.0
    assert accuracy(lite0, nips_demo.images, nips_demo.labels) >= 0.85


def test_model_normalises_inside(resnet20):
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(resnet20.model(x), resnet20.model.net((x - mean) / std), atol=1e-6)
    assert not any(p.requires_grad for p in resnet20.model.parameters())
    assert not resnet20.model.training


def write(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


FACTORY = """
    import torch
    from torch import nn
    from aevis_core.models import ModelSpec

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)
        def forward(self, x):
            return self.fc(self.conv(x).mean(dim=(2, 3)))

    def make():
        torch.manual_seed(0)
        return ModelSpec(Net(), (8, 8), ["cat", "dog"], mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    def make_dict():
        return dict(module=Net(), input_size=(8, 8), class_names=["cat", "dog"], weights="w.pt")

    def make_other_weights():
        return ModelSpec(Net(), (8, 8), ["cat", "dog"], weights="other.pt")

    def wrong():
        return Net()

    def boom():
        raise RuntimeError("no GPU here")

    not_callable = 3
"""


def test_file_factory_loads_and_normalises(tmp_path):
    path = write(tmp_path, "mymodel.py", FACTORY)
    e = load_model(f"{path}:make")
    assert e.class_names == ["cat", "dog"] and e.input_size == (8, 8)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(e.model(x), e.model.net((x - 0.5) / 0.5))


def test_factory_weights_loaded_weights_only(tmp_path):
    path = write(tmp_path, "mymodel.py", FACTORY)
    e = load_model(f"{path}:make")
    torch.save(e.model.net.state_dict(), tmp_path / "w.pt")
    e2 = load_model(f"{path}:make_dict")
    for a, b in zip(e.model.net.state_dict().values(), e2.model.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_package_module_factory(tmp_path, monkeypatch):
    write(tmp_path, "userpkg_models.py", FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_model("userpkg_models:make").num_classes == 2


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("spec,message", [
    ("resnet-9000", "unknown model 'resnet-9000'"),
    ("{d}/missing.py:make", "model file not found"),
    ("{d}/mymodel.py:nope", "has no callable named 'nope'"),
    ("{d}/mymodel.py:not_callable", "has no callable named 'not_callable'"),
    ("{d}/mymodel.py:wrong", "returned Net, expected aevis_core.models.ModelSpec"),
    ("{d}/mymodel.py:boom", "failed: RuntimeError: no GPU here"),
    ("{d}/mymodel.py:make-it", "bad model spec"),
    ("no_such_pkg_xyz:make", "cannot import module 'no_such_pkg_xyz'"),
    ("{d}/mymodel.py:make_other_weights", "does not fit Net"),
    ("torchvision:resnet18", "torchvision"),
])
def test_bad_model_specs_give_one_line(tmp_path, spec, message):
    write(tmp_path, "mymodel.py", FACTORY)
    torch.save({"linear.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(ModelLoadError) as err:
        load_model(spec.format(d=tmp_path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_pickle_that_runs_code_is_refused(tmp_path, capsys):
    write(tmp_path, "mymodel.py", FACTORY)
    with open(tmp_path / "w.pt", "wb") as f:
        pickle.dump({"fc.weight": Evil()}, f)
    with pytest.raises(ModelLoadError, match="refusing to load w.pt: not a plain weights file"):
        load_model(f"{tmp_path}/mymodel.py:make_dict")
    assert "pwned" not in capsys.readouterr().out


def test_model_dir_confines_factories(tmp_path):
    inside = tmp_path / "models"
    inside.mkdir()
    write(inside, "ok.py", FACTORY)
    outside = write(tmp_path, "evil.py", FACTORY)
    assert load_model("ok.py:make", model_dir=inside).num_classes == 2
    with pytest.raises(ModelLoadError, match="outside the model directory"):
        load_model(f"{outside}:make", model_dir=inside)
    with pytest.raises(ModelLoadError, match="outside the model directory"):
        load_model("../evil.py:make", model_dir=inside)
    with pytest.raises(ModelLoadError, match="only model files inside the model directory"):
        load_model("os:getcwd", model_dir=inside)


@pytest.mark.parametrize("error", [RuntimeError("CUDA driver mismatch\nline two"), OSError("libcudart.so: missing")])
def test_broken_torchvision_is_one_line_and_exit_2(monkeypatch, capsys, error):
    """A torchvision that raises anything on import (a CUDA build next to CPU torch) -> one line, exit 2."""
    import builtins
    import sys

    from aevis_core.cli import main

    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "torchvision" or name.startswith("torchvision."):
            raise error
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ModelLoadError) as err:
        load_model("torchvision:resnet18")
    assert "torchvision cannot be imported" in str(err.value) and type(error).__name__ in str(err.value)
    assert "\n" not in str(err.value)
    capsys.readouterr()
    assert main(["graph", "torchvision:resnet18"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "torchvision cannot be imported" in lines[0]
