"""The ``aevis`` CLI through subprocess: output, files, exit code 2 with one line for user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "AEVIS_DEVICE": "cpu"}


def aevis(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
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
