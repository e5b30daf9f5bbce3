"""Bad input to a PredictJob fails at once, with a message that says what is wrong.

Each case runs `gpubatch run` in a fresh process, which then reports whether
TensorFlow (or Keras) was imported and whether the engine's warm-up thread
(which imports it while the rows are read) was still at work: the model
folder, the settings and the input's schema are checked before any import;
the rows themselves while the warm-up runs, and an error there does not wait
for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.unit.test_predict_support import FEATURES, make_artifact, make_rows

ROOT = Path(__file__).resolve().parents[2]

# Runs the CLI in-process, then says which heavy modules got imported.
PROBE = """
import json, os, sys
from gpubatch_jobs.cli import main
from gpubatch_jobs.shutdown import background_work
code = main(sys.argv[1:])
print(json.dumps({"code": code, "imported": sorted(m for m in ("tensorflow", "keras") if m in sys.modules),
                  "warmingUp": background_work()}), flush=True)
os._exit(0)  # as `gpubatch run` itself ends (gpubatch_jobs.shutdown)
"""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("model") / "rnn")


def _copy(artifact: Path, tmp: Path) -> Path:
    target = tmp / "models" / "copy"
    target.mkdir(parents=True)
    for item in artifact.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


def run_cli(tmp: Path, model: str, spec: str = "", table: pd.DataFrame | None = None
            ) -> tuple[int, dict, list[str], str]:
    (tmp / "data").mkdir(exist_ok=True)
    (make_rows() if table is None else table).to_parquet(tmp / "data" / "rows.parquet", index=False)
    case = tmp / "cases" / "30"
    case.mkdir(parents=True, exist_ok=True)
    (case / "job.yaml").write_text(f"""
apiVersion: gpubatch.dev/v1alpha1
kind: PredictJob
metadata: {{name: p}}
spec:
  model: {model}
  input: {{path: ../../data/rows.parquet}}
  output: {{path: ../../out/pred.parquet}}
  batchSize: 8
{spec}""")
    env = {k: v for k, v in os.environ.items() if k not in ("GPUBATCH_DEVICE", "GPUBATCH_FAKE_GPU")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "jobs"), str(ROOT)])
    result = subprocess.run([sys.executable, "-c", PROBE, "run", "-q", str(case / "job.yaml")],
                            capture_output=True, text=True, env=env, timeout=300)
    lines = result.stdout.strip().splitlines()
    probe = json.loads(lines[-1])
    summary = json.loads(lines[-2])
    assert not (tmp / "out" / "pred.parquet").exists()
    return probe["code"], summary, probe["imported"] + (["warm-up running"] if probe["warmingUp"] else []), \
        result.stderr


def _duplicate(table: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([table, table[table["doc"] == "doc-4"].iloc[[2]]], ignore_index=True)


def _nan(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table.loc[3, "f1"] = float("nan")
    return table


DATA_CASES: list[tuple[str, Callable[[pd.DataFrame], pd.DataFrame], str, str]] = [
    ("missing column", lambda t: t.drop(columns=["f2"]), "", "['f2'] are not in"),
    ("feature count", lambda t: t, f"  windowSize: 6\n  input: {{path: ../../data/rows.parquet, features: {FEATURES[:2]}}}\n",
     "the model takes 3 features but 2 are named"),
    ("window too large", lambda t: t, "  windowSize: 12\n  stride: 6\n", "larger than the 6 rows the model was built for"),
    ("empty input", lambda t: t.iloc[:0], "", "no rows"),
]


ROW_CASES: list[tuple[str, Callable[[pd.DataFrame], pd.DataFrame], str]] = [
    ("duplicate position", _duplicate, "document 'doc-4' has position"),
    ("NaN feature", _nan, "'f1' has 1 NaN"),
]


@pytest.mark.parametrize(("name", "change", "message"), ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_bad_rows_fail_without_waiting_for_the_warm_up(artifact: Path, tmp_path: Path, name: str,
                                                       change: Callable[[pd.DataFrame], pd.DataFrame],
                                                       message: str) -> None:
    code, summary, imported, stderr = run_cli(tmp_path, str(artifact), "", change(make_rows()))
    assert code == 1 and message in summary["message"] and message in stderr
    # The rows were read while the warm-up imported TensorFlow; the error came out before that was done.
    assert "warm-up running" in imported, f"{name}: the error waited for the warm-up ({imported})"


@pytest.mark.parametrize(("name", "change", "spec", "message"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_fails_before_tensorflow_is_imported(artifact: Path, tmp_path: Path, name: str,
                                                      change: Callable[[pd.DataFrame], pd.DataFrame], spec: str,
                                                      message: str) -> None:
    code, summary, imported, _ = run_cli(tmp_path, str(artifact), spec, change(make_rows()))
    assert code == 1 and message in summary["message"]
    assert imported == [], f"{name}: {imported} imported before the input was checked"


def test_corrupt_model_file_is_named_as_corrupt_not_missing(artifact: Path, tmp_path: Path) -> None:
    folder = _copy(artifact, tmp_path)
    (folder / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    code, summary, imported, _ = run_cli(tmp_path, str(folder))
    message = summary["message"]
    assert code == 1 and imported == []
    assert "not found" not in message.lower()
    assert f"{folder / 'model.keras'}: not a readable .keras file" in message
    assert "re-run the TrainJob" in message


def test_model_file_missing_its_config_is_corrupt(artifact: Path, tmp_path: Path) -> None:
    folder = _copy(artifact, tmp_path)
    with zipfile.ZipFile(folder / "model.keras", "w") as handle:
        handle.writestr("metadata.json", "{}")
    code, summary, _, _ = run_cli(tmp_path, str(folder))
    assert code == 1 and "not a readable .keras file" in summary["message"]


def test_model_pointing_at_the_keras_file_says_to_name_its_folder(artifact: Path, tmp_path: Path) -> None:
    folder = _copy(artifact, tmp_path)
    code, summary, imported, _ = run_cli(tmp_path, str(folder / "model.keras"))
    message = summary["message"]
    assert code == 1 and imported == []
    assert "no preprocessing.json here" not in message
    assert f"spec.model: {folder / 'model.keras'} is the model file; set spec.model to its folder {folder}" in message


def test_paths_in_messages_are_normalised(artifact: Path, tmp_path: Path) -> None:
    code, summary, _, _ = run_cli(tmp_path, "../../models/none")
    assert code == 1
    assert str(tmp_path / "models" / "none") in summary["message"]
    assert ".." not in summary["message"]


def test_tensorflow_noise_is_quiet_on_a_cpu_run(artifact: Path, tmp_path: Path) -> None:
    code, summary, imported, stderr = run_cli(tmp_path, str(artifact), "  output: {path: ../../out/ok.parquet}\n")
    assert code == 0 and summary["ok"] and imported
    for noise in ("cuInit", "E0000", "I0000", "oneDNN", "absl::InitializeLog"):
        assert noise not in stderr, stderr
