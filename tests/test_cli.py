"""The ``aevis`` CLI through subprocess: output, files, exit code 2 with one line for user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "AEVIS_DEVICE": "cpu"}


def aevis(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.server.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def test_help_and_models():
    r = aevis("--help")
    assert r.returncode == 0 and "attack" in r.stdout and "graph" in r.stdout
    r = aevis("models")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0].startswith("* efficientnet-lite0")
    assert "cifar-resnet56" in r.stdout


def test_graph_json():
    r = aevis("graph", "cifar-resnet20", "--json")
    assert r.returncode == 0, r.stderr
    g = json.loads(r.stdout)
    assert g["traced"] and len(g["blocks"]) == 9
    assert g["nodes"][1]["id"] == "conv1" and g["nodes"][1]["shape"] == [16, 32, 32]


def test_attack_writes_pngs_and_manifest(tmp_path):
    r = aevis("attack", "cifar-resnet20", "demo:cifar10", "--eps", "8/255", "--limit", "8",
              "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    records = manifest["records"]
    assert len(records) == 8 and len(list(tmp_path.glob("*.adv.png"))) == 8
    assert all(rec["linf"] <= 8 / 255 + 1e-6 and rec["method"] == "mifgsm" for rec in records)
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("accuracy (white-box cifar-resnet20): clean ")


@pytest.mark.parametrize("args,message", [
    (("graph", "nope"), "unknown model 'nope'"),
    (("attack", "cifar-resnet20", "/no/such/folder", "--out", "x"), "image folder not found"),
    (("attack", "cifar-resnet20", "demo:cifar10", "--eps", "lots", "--out", "x"), "eps"),
    (("attack", "cifar-resnet20", "demo:cifar10", "--method", "magic", "--out", "x"), "magic"),
    (("graph", "missing_file.py:make"), "model file not found"),
])
def test_user_errors_exit_2_with_one_line(args, message):
    r = aevis(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aevis: error: ") and message in lines[0]
    assert "Traceback" not in r.stderr


def test_argparse_error_exit_2():
    r = aevis("attack", "cifar-resnet20")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_extract_round_trip(tmp_path):
    out = tmp_path / "dp.json"
    args = ("extract", "cifar-resnet20", "--set", "cat=demo:cifar10:cat", "--set", "dog=demo:cifar10:dog",
            "--layers", "layer3.2.conv2,layer3.2.relu2,avgpool,linear", "--cache-dir", str(tmp_path / "c"),
            "--out", str(out))
    r = aevis(*args)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert set(d["sets"]) == {"cat", "dog"} and len(d["sets"]["cat"]["ids"]) == 10
    lay = d["sets"]["cat"]["layers"]["layer3.2.relu2"]
    assert lay["n"] == 64 and len(lay["z"]) == 64
    assert all(lay["z"][i] > 0.5 for i in lay["critical"])
    assert any(c[0] == "layer3.2.relu2" and c[2] == "avgpool" for c in d["sets"]["cat"]["connections"])
    assert "statistics" in d
    again = aevis(*args)
    assert again.returncode == 0 and "(cached)" in again.stdout


def test_score_and_demo(tmp_path):
    adv_dir = tmp_path / "adv"
    r = aevis("attack", "cifar-resnet20", "demo:cifar10", "--eps", "8/255", "--limit", "6", "--out", str(adv_dir))
    assert r.returncode == 0, r.stderr
    r = aevis("score", "cifar-resnet20", str(adv_dir), "--no-cache")
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith(("airplane", "automobile"))]
    scores = {row[0]: float(row[-1]) for row in rows}
    adv = [v for k, v in scores.items() if k.endswith(".adv")]
    clean = [v for k, v in scores.items() if k.endswith(".clean")]
    assert len(adv) == len(clean) == 6 and all(0 <= v <= 1 for v in scores.values())
    assert sum(adv) / 6 > sum(clean) / 6 + 0.3
    r = aevis("demo", "--model", "cifar-resnet20", "--eps", "8/255", "--n", "4")
    assert r.returncode == 0, r.stderr
    assert "clean top-1 accuracy" in r.stdout and "MI-FGSM fooled" in r.stdout


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    """6 demo airplanes and their MI-FGSM twins as `aevis attack` writes them (x.clean.png, x.adv.png)."""
    folder = tmp_path_factory.mktemp("adv")
    r = aevis("attack", "cifar-resnet20", "demo:cifar10", "--eps", "8/255", "--limit", "6", "--out", str(folder))
    assert r.returncode == 0, r.stderr
    return folder


def test_compare_prints_the_diverging_point_and_writes_json(attacked, tmp_path):
    out = tmp_path / "cmp.json"
    r = aevis("compare", "cifar-resnet20", "--normal", str(attacked / "*.clean.png"),
              "--adversarial", str(attacked / "*.adv.png"), "--draws", "19", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "6 pair(s)" in r.stdout and "control shuffled (R = 19 draws)" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.startswith("diverging point: "))
    d = json.loads(out.read_text())
    point = d["diverging_point"]
    assert point["layer"] is not None and line.startswith(f"diverging point: {point['layer']} ")
    layers = [e["layer"] for e in d["divergence"]["evidence"]]
    assert point["layer"] in layers and layers[point["index"]] == point["layer"]
    assert point["evidence"]["below"] and len(point["evidence"]["p_images"]) == 6
    assert point["gate_p"] == pytest.approx(1 / 20)                      # the smallest with R = 19
    assert sorted(p[0] for p in d["pairs"]) == [f"airplane_000{i}.clean" for i in range(6)]
    assert all(a == n.replace(".clean", ".adv") for n, a in d["pairs"])
    assert d["control"]["kind"] == "shuffled"
    assert d["control"]["rms_control_255"] == pytest.approx(d["control"]["rms_adv_255"], rel=1e-3)
    drops = [e["effect"] for e in d["most_different"]]
    assert len(drops) == 5 and drops == sorted(drops, reverse=True)
    assert drops[0] == max(e["effect"] for e in d["divergence"]["evidence"])


@pytest.mark.slow
def test_compare_through_the_demo_and_a_folder_with_other_controls(attacked, tmp_path):
    r = aevis("compare", "cifar-resnet20", "--normal", "demo:cifar10:airplane", "--adversarial", str(attacked),
              "--control", "uniform", "--draws", "19")
    assert r.returncode == 2 and "Traceback" not in r.stderr         # 10 demo airplanes, 6 twins
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aevis: error: unmatched images")
    assert "normal airplane_0006, airplane_0007, airplane_0008, airplane_0009" in lines[0]
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in attacked.glob("airplane_000[0-2].*.png"):
        (partial / f.name).write_bytes(f.read_bytes())
    (partial / "airplane_0002.adv.png").unlink()
    (partial / "stray.adv.png").write_bytes((attacked / "airplane_0003.adv.png").read_bytes())
    r = aevis("compare", "cifar-resnet20", "--normal", str(partial), "--adversarial", str(partial))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "normal airplane_0002.clean" in lines[0] and "adversarial stray.adv" in lines[0]
    r = aevis("compare", "cifar-resnet20", "--normal", str(attacked), "--adversarial", str(attacked),
              "--control", "sign", "--draws", "19", "--layers", "layer3.2.add,avgpool,linear")
    assert r.returncode == 0, r.stderr
    assert "control sign (R = 19 draws)" in r.stdout and "3 layers" in r.stdout
