"""Attacks (MI-FGSM, FGSM, PGD, C&W-L2, DeepFool), transfer and lossless storage.

Real-model tests use CIFAR ResNet-20/56 on the 100 shipped CIFAR-10 demo images; the heavy
MI-FGSM run happens once per module (fixture ``transfer``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from aevis_core.attacks import (
    METHODS,
    AttackConfig,
    TransferResult,
    images_to_tensor,
    load_adversarial,
    parse_eps,
    quantise,
    run_attack,
    safe_stem,
    save_adversarial,
    transfer_attack,
)
from aevis_core.data import demo_path, load_image_set
from aevis_core.errors import AEVisError
from aevis_core.models import load_model
from aevis_core.models.base import ModelEntry, ModelSpec, wrap

EPS = 8 / 255
Data = tuple[list[str], torch.Tensor, torch.Tensor]
Transfer = tuple[TransferResult, list[tuple[int, int]]]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Small CPU convolutions with 2 OpenMP threads slow down 10-60x on a busy machine; one thread
    keeps this file's run time predictable. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def r20() -> ModelEntry:
    return load_model("cifar-resnet20")


@pytest.fixture(scope="module")
def cifar(r20: ModelEntry) -> Data:
    s = load_image_set(demo_path("cifar10"))
    assert len(s) == 100 and all(lab is not None for lab in s.labels)
    return list(s.ids), r20.preprocess_many(s.images), torch.tensor(s.labels)


@pytest.fixture(scope="module")
def small(cifar: Data) -> Data:
    """20 images, two per class."""
    ids, x, y = cifar
    idx = [i for i in range(100) if i % 10 < 2]
    return [ids[i] for i in idx], x[idx], y[idx]


@pytest.fixture(scope="module")
def transfer(r20: ModelEntry, cifar: Data) -> Transfer:
    _, x, y = cifar
    calls: list[tuple[int, int]] = []
    cfg = AttackConfig("mifgsm", eps=EPS, steps=10, batch_size=50)
    res = transfer_attack(r20, load_model("cifar-resnet56"), x, y, cfg,
                          progress=lambda d, t: calls.append((d, t)))
    return res, calls


def _linf(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _toy(num_classes: int = 3, size: int = 8, zero: bool = False) -> nn.Module:
    linear = nn.Linear(3 * size * size, num_classes)
    if zero:
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.Flatten(), linear).eval()


# --------------------------------------------------------------------------- MI-FGSM and transfer
@pytest.mark.slow
def test_mifgsm_whitebox_breaks_resnet20(transfer: Transfer, cifar: Data) -> None:
    res, calls = transfer
    _, x, y = cifar
    acc = res.accuracies()
    assert acc["source_clean"] >= 0.75
    assert acc["source_adv"] < 0.10, acc
    assert _linf(res.adv, x) <= EPS + 1e-6
    assert float(res.adv.min()) >= 0.0 and float(res.adv.max()) <= 1.0
    assert res.adv.shape == x.shape and res.adv.dtype == torch.float32
    assert calls == [(50, 100), (100, 100)]


@pytest.mark.slow
def test_transfer_resnet20_to_resnet56_reports_both(transfer: Transfer) -> None:
    res, _ = transfer
    acc = res.accuracies()
    assert set(acc) == {"source_clean", "source_adv", "target_clean", "target_adv"}
    assert acc["target_clean"] >= 0.75
    assert acc["target_adv"] < acc["target_clean"]  # black-box examples transfer in part
    assert 0.0 <= res.transfer_rate() <= 1.0
    assert res.target_adv.shape == (100,) and res.seconds > 0


@pytest.mark.slow
def test_mifgsm_targeted_hits_target(r20: ModelEntry, cifar: Data) -> None:
    _, x, y = cifar
    target = (y + 1) % 10
    cfg = AttackConfig("mifgsm", eps=EPS, steps=10, targeted=True, batch_size=100)
    adv = run_attack(r20.model, x, y, cfg, target=target)
    hit = float((r20.predict(adv)[1] == target).float().mean())
    assert hit >= 0.90, hit
    assert _linf(adv, x) <= EPS + 1e-6


# --------------------------------------------------------------------------- other methods
@pytest.mark.parametrize("cfg", [
    AttackConfig("fgsm", eps=EPS),
    AttackConfig("pgd", eps=EPS, steps=5),
    AttackConfig("cw", steps=30, c=1.0, lr=0.01),
    AttackConfig("deepfool", steps=10),
], ids=lambda c: c.method)
def test_methods_change_most_predictions(r20: ModelEntry, small: Data, cfg: AttackConfig) -> None:
    """Each method changes most predictions, also after 8-bit rounding (C&W/DeepFool check it)."""
    _, x, y = small
    adv = run_attack(r20.model, x, y, cfg)
    assert adv.shape == x.shape and float(adv.min()) >= 0 and float(adv.max()) <= 1
    stored = torch.round(adv * 255) / 255  # what save_adversarial keeps
    changed = float((r20.predict(stored)[1] != r20.predict(x)[1]).float().mean())
    assert changed >= 0.6, (cfg.method, changed)
    if cfg.method in ("fgsm", "pgd"):
        assert _linf(adv, x) <= EPS + 1e-6


def test_cw_targeted(r20: ModelEntry, small: Data) -> None:
    _, x, y = small
    x, y = x[::2], y[::2]
    target = (y + 1) % 10
    adv = run_attack(r20.model, x, y, AttackConfig("cw", steps=30, targeted=True), target=target)
    assert float((r20.predict(adv)[1] == target).float().mean()) >= 0.6


def test_same_seed_same_output_and_seed_matters(r20: ModelEntry, small: Data) -> None:
    _, x, y = small
    x, y = x[:8], y[:8]
    cfg = AttackConfig("pgd", eps=EPS, steps=3, seed=7)
    a = run_attack(r20.model, x, y, cfg)
    torch.manual_seed(123)  # the global RNG must not matter
    torch.rand(5)
    b = run_attack(r20.model, x, y, cfg)
    c = run_attack(r20.model, x, y, AttackConfig("pgd", eps=EPS, steps=3, seed=8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("method", ["mifgsm", "pgd"])
def test_batch_size_does_not_change_results(r20: ModelEntry, cifar: Data, method: str) -> None:
    _, x, y = cifar
    x, y = x[:32], y[:32]
    a = run_attack(r20.model, x, y, AttackConfig(method, eps=EPS, steps=5, batch_size=7))
    b = run_attack(r20.model, x, y, AttackConfig(method, eps=EPS, steps=5, batch_size=32))
    assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # urllib3, imported by torchattacks
def test_agrees_with_torchattacks(r20: ModelEntry, small: Data) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    _, x, y = small
    x, y = x[:10], y[:10]
    t = (y + 1) % 10
    ta_mi = torchattacks.MIFGSM(r20.model, eps=EPS, alpha=EPS / 4, steps=4, decay=1.0)
    ta_mi_t = torchattacks.MIFGSM(r20.model, eps=EPS, alpha=EPS / 4, steps=4, decay=1.0)
    ta_mi_t.set_mode_targeted_by_label(quiet=True)
    pairs = [
        (torchattacks.FGSM(r20.model, eps=EPS)(x, y), AttackConfig("fgsm", eps=EPS), None),
        (ta_mi(x, y), AttackConfig("mifgsm", eps=EPS, steps=4), None),
        (ta_mi_t(x, t), AttackConfig("mifgsm", eps=EPS, steps=4, targeted=True), t),
        (torchattacks.PGD(r20.model, eps=EPS, alpha=2 / 255, steps=4, random_start=False)(x, y),
         AttackConfig("pgd", eps=EPS, alpha=2 / 255, steps=4, random_start=False), None),
    ]
    for ref, cfg, target in pairs:
        ours = run_attack(r20.model, x, y, cfg, target=target)
        differing = float(((ours - ref.cpu()).abs() > 1e-6).float().mean())
        assert differing <= 1e-3, (cfg.method, cfg.targeted, differing)


def test_zero_gradient_gives_no_nan_and_mode_is_restored() -> None:
    model = _toy(zero=True).train()
    x = torch.rand(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 0])
    adv = run_attack(model, x, y, AttackConfig("mifgsm"))
    assert torch.isfinite(adv).all() and torch.equal(adv, x)
    assert model.training  # eval during the attack, previous mode restored


def test_toy_model_all_methods_and_empty_batch() -> None:
    torch.manual_seed(0)
    model = _toy()
    x = torch.rand(5, 3, 8, 8)
    y = model(x).argmax(1)
    for method in METHODS:
        adv = run_attack(model, x, y, AttackConfig(method, eps=EPS, steps=5, batch_size=2))
        assert adv.shape == x.shape and torch.isfinite(adv).all()
    assert all(p.grad is None for p in model.parameters())  # attacks leave the model untouched
    empty = run_attack(model, x[:0], y[:0], AttackConfig())
    assert empty.shape == (0, 3, 8, 8)


def test_method_aliases() -> None:
    model = _toy()
    x = torch.rand(2, 3, 8, 8)
    y = torch.tensor([0, 1])
    a = run_attack(model, x, y, AttackConfig("MI-FGSM"))
    b = run_attack(model, x, y, AttackConfig("mifgsm"))
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- validation
_X = torch.rand(2, 3, 8, 8)
_Y = torch.tensor([0, 1])


@pytest.mark.parametrize(("kwargs", "inputs", "message"), [
    ({"method": "nope"}, {}, "unknown attack method 'nope'"),
    ({"eps": 0.0}, {}, r"eps must be in \(0, 1\]"),
    ({"eps": -0.1}, {}, r"eps must be in \(0, 1\]"),
    ({"eps": 8.0}, {}, "did you mean 8/255"),
    ({"eps": math.nan}, {}, "eps must be a finite number"),
    ({"steps": 0}, {}, "steps must be an integer >= 1"),
    ({"steps": 2.5}, {}, "steps must be an integer >= 1"),
    ({"alpha": 0.0}, {}, r"alpha \(step size\) must be in \(0, 1\]"),
    ({"decay": -1.0}, {}, "decay .* must be >= 0"),
    ({"batch_size": 0}, {}, "batch_size must be an integer >= 1"),
    ({"seed": -1}, {}, "seed must be an integer >= 0"),
    ({"c": 0.0}, {}, "C&W c must be > 0"),
    ({"lr": -1.0}, {}, "C&W lr must be > 0"),
    ({"kappa": -1.0}, {}, "C&W kappa must be >= 0"),
    ({"overshoot": -0.1}, {}, "DeepFool overshoot must be >= 0"),
    ({"method": "deepfool", "targeted": True}, {"target": _Y}, "deepfool has no targeted mode"),
    ({"targeted": True}, {}, "targeted attack needs target classes"),
    ({}, {"target": _Y}, "target classes given but the attack is untargeted"),
    ({}, {"x": torch.rand(2, 1, 8, 8)}, r"must be a \(N, 3, H, W\) tensor"),
    ({}, {"x": _X * 2}, r"pixels in \[0, 1\]"),
    ({}, {"y": torch.tensor([0])}, r"labels must be an integer tensor of shape \(2,\)"),
    ({}, {"y": torch.tensor([0, 7])}, r"labels must be class indices in \[0, 3\)"),
    ({"targeted": True}, {"target": torch.tensor([0, 9])}, r"targets must be class indices"),
])
def test_bad_config_gives_one_line_error(kwargs: dict[str, Any], inputs: dict[str, Any],
                                        message: str) -> None:
    args = {"x": _X, "y": _Y, "target": None, **inputs}
    with pytest.raises(AEVisError, match=message) as info:
        run_attack(_toy(), args["x"], args["y"], AttackConfig(**kwargs), target=args["target"])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "value"), [
    ("4/255", 4 / 255), (" 8 / 255 ", 8 / 255), ("0.0157", 0.0157), (".5", 0.5), ("1", 1.0),
    ("1e-2", 0.01), ("16/255.0", 16 / 255),
])
def test_parse_eps_ok(text: str, value: float) -> None:
    assert parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize(("text", "message"), [
    ("", "cannot parse eps"), ("abc", "cannot parse eps"), ("4/", "cannot parse eps"),
    ("4/255/2", "cannot parse eps"), ("-0.1", "cannot parse eps"), ("nan", "cannot parse eps"),
    ("1/0", "division by zero"), ("0", "outside"), ("8", "did you mean 8/255"),
    ("__import__('os')", "cannot parse eps"),
])
def test_parse_eps_rejects(text: str, message: str) -> None:
    with pytest.raises(AEVisError, match=message):
        parse_eps(text)


def test_transfer_needs_matching_models(r20: ModelEntry, small: Data) -> None:
    _, x, y = small
    other = wrap(ModelSpec(_toy(size=8), (8, 8), ["a", "b", "c"]), "toy")
    with pytest.raises(AEVisError, match="same input size"):
        transfer_attack(r20, other, x, y, AttackConfig())


# --------------------------------------------------------------------------- storage
def test_save_load_round_trip(tmp_path: Path, r20: ModelEntry, small: Data) -> None:
    ids, x, y = small
    ids, x, y = ids[:10], x[:10], y[:10]
    cfg = AttackConfig("mifgsm", eps=4 / 255, steps=5, seed=3)
    adv = run_attack(r20.model, x, y, cfg)
    records = save_adversarial(tmp_path, ids, adv, x, cfg, r20, labels=y)
    images, loaded = load_adversarial(tmp_path)
    stored = images_to_tensor(images)
    assert torch.equal(stored, torch.round(adv * 255) / 255)  # exact 8-bit quantisation
    assert [r.to_dict() for r in loaded] == [r.to_dict() for r in records]
    reloaded_pred = r20.predict(images_to_tensor([Image.open(tmp_path / r.file) for r in loaded]))[1]
    clean_back = images_to_tensor(load_adversarial(tmp_path, clean=True)[0])
    assert torch.equal(clean_back, x)  # CIFAR demo pixels are already 8-bit
    for i, r in enumerate(loaded):
        assert r.id == ids[i] and r.method == "mifgsm" and r.eps == pytest.approx(4 / 255)
        assert r.steps == 5 and r.seed == 3 and r.targeted is False and r.target is None
        assert r.model_id == r20.model_id and r.label == int(y[i])
        assert r.label_name == r20.class_names[int(y[i])]
        assert r.adv_pred == int(reloaded_pred[i])
        assert 0.0 <= r.adv_prob <= 1.0 and 0.0 <= r.clean_prob <= 1.0
        assert r.linf <= 4 / 255 + 1e-6 and r.linf_levels <= 4
        assert r.success == (r.adv_pred != r.label)
        assert r.params["alpha"] == pytest.approx(4 / 255 / 5)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "aevis-adversarial" and "round(x * 255)" in manifest["quantisation"]


def test_quantised_delta_is_clipped_to_eps() -> None:
    torch.manual_seed(0)
    clean = torch.rand(3, 3, 5, 5)  # not on the 8-bit grid
    eps = 0.0157  # 4.0035 levels -> at most 4 stored levels
    adv = (clean + torch.empty_like(clean).uniform_(-eps, eps).sign() * eps).clamp(0, 1)
    adv8, clean8 = quantise(adv, clean, eps)
    d = (adv8.int() - clean8.int()).abs()
    assert int(d.max()) == 4 and float(d.max()) / 255 <= eps
    exact8, _ = quantise(adv, clean, None)  # L2 attacks: plain rounding
    assert torch.equal(exact8, (adv * 255).round().to(torch.uint8))


def test_targeted_records_and_manifest_merge(tmp_path: Path, r20: ModelEntry, small: Data) -> None:
    ids, x, y = small
    t = (y[:4] + 1) % 10
    cfg = AttackConfig("mifgsm", eps=EPS, steps=5, targeted=True)
    adv = run_attack(r20.model, x[:4], y[:4], cfg, target=t)
    save_adversarial(tmp_path, ids[:2], adv[:2], x[:2], cfg, r20, labels=y[:2], target=t[:2])
    save_adversarial(tmp_path, ids[2:4], adv[2:4], x[2:4], cfg, r20, labels=None, target=t[2:4],
                     save_clean=False)
    _, records = load_adversarial(tmp_path)
    assert [r.id for r in records] == ids[:4]
    assert [r.target for r in records] == t.tolist()
    assert all(r.target_name == r20.class_names[r.target] for r in records)  # type: ignore[index]
    assert all(r.success == (r.adv_pred == r.target) for r in records)
    assert records[2].label is None and records[2].clean_file is None
    with pytest.raises(AEVisError, match="was not stored"):
        load_adversarial(tmp_path, clean=True)


def test_l2_attack_records_survive_storage(tmp_path: Path, r20: ModelEntry, small: Data) -> None:
    ids, x, y = small
    cfg = AttackConfig("deepfool", steps=10)
    adv = run_attack(r20.model, x[:8], y[:8], cfg)
    records = save_adversarial(tmp_path, ids[:8], adv, x[:8], cfg, r20, labels=y[:8])
    assert all(r.norm == "l2" and r.eps is None for r in records)
    assert all(r.adv_pred != r.clean_pred for r in records)  # DeepFool's 8-bit check
    assert sum(r.success for r in records) >= 6


def test_file_names_are_sanitised(tmp_path: Path) -> None:
    ids = ["../../etc/passwd", "a/b\\c.jpg", "..", "", "CON", "cat/1.jpg", "cat_1.png", ".hidden"]
    model = wrap(ModelSpec(_toy(size=4), (4, 4), ["a", "b", "c"]), "toy")
    x = torch.rand(len(ids), 3, 4, 4)
    cfg = AttackConfig("fgsm", eps=EPS)
    adv = run_attack(model.model, x, torch.zeros(len(ids), dtype=torch.long), cfg)
    out = tmp_path / "out"
    records = save_adversarial(out, ids, adv, x, cfg, model)
    names = [r.file for r in records]
    assert len(set(names)) == len(names)
    for n in names:
        assert "/" not in n and "\\" not in n and ".." not in n and not n.startswith(".")
        assert (out / n).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert safe_stem("cat/0003.jpg") == "cat_0003" and safe_stem("..") == "img"


def test_load_rejects_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(AEVisError, match="no manifest.json"):
        load_adversarial(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(AEVisError, match="cannot read"):
        load_adversarial(tmp_path)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path.parent / "evil.png")
    record: dict[str, Any] = {k: None for k in ("id", "clean_file", "method", "norm", "eps", "steps", "seed",
                                "targeted", "target", "target_name", "label", "label_name",
                                "model_id", "model_name", "clean_pred", "clean_pred_name",
                                "clean_prob", "adv_pred", "adv_pred_name", "adv_prob", "linf",
                                "linf_levels", "l2", "success")}
    record["file"] = "../evil.png"
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format": "aevis-adversarial", "version": 1, "records": [record]}))
    with pytest.raises(AEVisError, match="unsafe file"):
        load_adversarial(tmp_path)
