"""`distill score`: one JSON object on stdout, official warnings/errors on stderr, exit codes 0 and 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from distill.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _ids(data_file):
    data = json.loads(data_file.read_text())
    return [qa for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def _single_json_object(stdout):
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


def test_score_v1_prints_one_json_object_and_exits_0(dev_v1_slice, tmp_path):
    preds = _write(tmp_path / "p.json", {qa["id"]: qa["answers"][0]["text"] for qa in _ids(dev_v1_slice)})
    result = runner.invoke(app, ["score", str(dev_v1_slice), preds])
    assert result.exit_code == 0, result.output
    assert _single_json_object(result.stdout) == {"exact_match": 100.0, "f1": 100.0}
    assert result.stderr == ""


def test_score_v1_missing_prediction_warns_on_stderr_and_scores_it_zero(dev_v1_slice, tmp_path):
    qas = _ids(dev_v1_slice)
    preds = _write(tmp_path / "p.json", {qa["id"]: qa["answers"][0]["text"] for qa in qas[1:]})
    result = runner.invoke(app, ["score", str(dev_v1_slice), preds])
    assert result.exit_code == 0
    assert result.stderr == f"Unanswered question {qas[0]['id']} will receive score 0.\n"
    out = _single_json_object(result.stdout)
    assert out["exact_match"] == 100.0 * (len(qas) - 1) / len(qas)


def test_score_v1_ignores_a_probability_file_with_a_note_on_stderr(dev_v1_slice, tmp_path):
    qas = _ids(dev_v1_slice)
    preds = _write(tmp_path / "p.json", {qa["id"]: "" for qa in qas})
    na = _write(tmp_path / "na.json", {qa["id"]: 1.0 for qa in qas})
    result = runner.invoke(app, ["score", str(dev_v1_slice), preds, "-n", na, "-t", "-1"])
    assert result.exit_code == 0
    assert _single_json_object(result.stdout) == {"exact_match": 0.0, "f1": 0.0}
    assert result.stderr == f"note: {na} ignored: no-answer probabilities only apply to SQuAD v2.0\n"


def test_score_v2_with_probabilities_and_threshold_options(dev_v2_slice, tmp_path):
    qas = _ids(dev_v2_slice)
    preds = _write(tmp_path / "p.json", {qa["id"]: "" for qa in qas})
    na = _write(tmp_path / "na.json", {qa["id"]: 0.9 for qa in qas})
    result = runner.invoke(app, ["score", str(dev_v2_slice), preds, "-n", na, "-t", "0.5"])
    assert result.exit_code == 0, result.output
    out = _single_json_object(result.stdout)
    n_no = sum(1 for qa in qas if qa.get("is_impossible"))
    assert 0 < n_no < len(qas)
    assert out["total"] == len(qas) and out["NoAns_total"] == n_no
    assert out["exact"] == 100.0 * n_no / len(qas) and out["best_exact_thresh"] == 0.0


def test_score_v2_missing_prediction_exits_2_with_one_line(dev_v2_slice, tmp_path):
    qas = _ids(dev_v2_slice)
    preds = _write(tmp_path / "p.json", {qa["id"]: "" for qa in qas[2:]})
    result = runner.invoke(app, ["score", str(dev_v2_slice), preds])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (f"error: {preds}: no prediction for 2 of {len(qas)} question(s) missing:"
                             f" {qas[0]['id']}, {qas[1]['id']} (SQuAD v2.0 needs one for every question;"
                             ' "" means no answer)\n')


def test_score_bad_prediction_file_and_bad_version_exit_2(dev_v1_slice, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(app, ["score", str(dev_v1_slice), str(bad)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {bad}: not valid JSON at line 1 column 2")
    assert len(result.stderr.splitlines()) == 1
    result = runner.invoke(app, ["score", str(dev_v1_slice), str(bad), "--version", "2"])
    assert result.exit_code == 2 and result.stderr == "error: --version '2': expected 1.1 or 2.0\n"


def test_score_as_a_real_subprocess(dev_v2_slice, tmp_path):
    qas = _ids(dev_v2_slice)
    preds = _write(tmp_path / "p.json", {qa["id"]: (qa["answers"][0]["text"] if qa["answers"] else "") for qa in qas})
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "cache"))
    ok = subprocess.run([sys.executable, "-m", "distill", "score", str(dev_v2_slice), preds],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == ""
    out = _single_json_object(ok.stdout)
    assert list(out)[:3] == ["exact", "f1", "total"] and out["exact"] == 100.0
    bad = subprocess.run([sys.executable, "-m", "distill", "score", str(dev_v2_slice), str(tmp_path / "none.json")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == f"error: {tmp_path / 'none.json'}: file not found\n"
