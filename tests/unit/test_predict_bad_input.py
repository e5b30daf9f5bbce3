"""Every kind of bad input ends in BadInput (exit 1) naming the cause, with nothing under the output name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpubatch_jobs.errors import EXIT_BAD_INPUT
from gpubatch_jobs.execute import execute
from gpubatch_jobs.spec.kinds import PredictJobSpec
from tests.unit.local import run_context
from tests.unit.test_predict_support import FEATURES, make_artifact, make_rows


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("model") / "rnn")


def _copy_artifact(artifact: Path, tmp: Path) -> Path:
    target = tmp / "copy"
    target.mkdir()
    for item in artifact.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


def _missing_folder(artifact: Path, tmp: Path) -> Path:
    return tmp / "no-such-model"


def _no_model_file(artifact: Path, tmp: Path) -> Path:
    folder = _copy_artifact(artifact, tmp)
    (folder / "model.keras").unlink()
    return folder


def _corrupt_model(artifact: Path, tmp: Path) -> Path:
    folder = _copy_artifact(artifact, tmp)
    (folder / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    return folder


def _corrupt_preprocessing(artifact: Path, tmp: Path) -> Path:
    folder = _copy_artifact(artifact, tmp)
    (folder / "preprocessing.json").write_text("{\"modelType\": \"rnn\",")
    return folder


MODEL_CASES: list[tuple[str, Callable[[Path, Path], Path], str]] = [
    ("missing folder", _missing_folder, "model folder not found"),
    ("no model.keras", _no_model_file, "model.keras"),
    ("corrupt model.keras", _corrupt_model, "not a readable .keras file"),
    ("corrupt preprocessing.json", _corrupt_preprocessing, "preprocessing.json"),
]


def _run(tmp: Path, model: Path, table: pd.DataFrame | None, capsys: pytest.CaptureFixture[str],
         **spec: object) -> str:
    if table is not None:
        table.to_parquet(tmp / "rows.parquet", index=False)
    body = {"model": str(model), "input": {"path": "rows.parquet"}, "output": {"path": "out/pred.parquet"}, **spec}
    code = execute("PredictJob", PredictJobSpec.model_validate(body), run_context(PredictJobSpec.model_validate(body), base_dir=tmp), termination_log=False)
    assert code == EXIT_BAD_INPUT
    assert not (tmp / "out" / "pred.parquet").exists()
    assert not list((tmp / "out").glob(".pred.parquet*")) if (tmp / "out").exists() else True
    return capsys.readouterr().err


@pytest.mark.parametrize(("name", "make_model", "message"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                   make_model: Callable[[Path, Path], Path], message: str) -> None:
    error = _run(tmp_path, make_model(artifact, tmp_path), make_rows(), capsys)
    assert message in error


def _duplicate(table: pd.DataFrame) -> pd.DataFrame:
    doc4 = table[table["doc"] == "doc-4"]
    extra = doc4.iloc[[2]]
    return pd.concat([table, extra], ignore_index=True)


def _unsorted(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    where = table.index[table["doc"] == "doc-5"][:2]
    table.loc[where, "pos"] = table.loc[where[::-1], "pos"].to_numpy()
    return table


def _nan_feature(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table.loc[3, "f1"] = np.nan
    return table


def _no_id(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["doc"] = table["doc"].astype(object)
    table.loc[5, "doc"] = None
    return table


def _no_position(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy().astype({"pos": float})
    table.loc[2, "pos"] = np.nan
    return table


def _text_feature(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(f0="x")


DATA_CASES = [
    ("duplicate position", _duplicate, {}, "document 'doc-4' has position"),
    ("unsorted positions", _unsorted, {}, "document 'doc-5': position"),
    ("empty input", lambda t: t.iloc[:0], {}, "no rows"),
    ("row without a document", _no_id, {}, "has no document id"),
    ("row without a position", _no_position, {}, "has no position"),
    ("NaN feature", _nan_feature, {}, "'f1' has 1 NaN"),
    ("text feature", _text_feature, {}, "'f0' is not numeric"),
    ("missing column", lambda t: t.drop(columns=["f2"]), {}, "['f2'] are not in"),
    ("feature count", lambda t: t, {"input": {"path": "rows.parquet", "features": FEATURES[:2]}},
     "the model takes 3 features but 2 are named"),
    ("window too large", lambda t: t, {"windowSize": 12, "stride": 6}, "larger than the 6 rows the model was built for"),
]


@pytest.mark.parametrize(("name", "change", "spec", "message"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                  change: Callable[[pd.DataFrame], pd.DataFrame], spec: dict, message: str) -> None:
    error = _run(tmp_path, artifact, change(make_rows()), capsys, batchSize=8, **spec)
    assert message in error


def test_missing_input_file(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "input file not found" in _run(tmp_path, artifact, None, capsys)


def test_existing_output_is_kept_without_overwrite(artifact: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    make_rows().to_parquet(tmp_path / "rows.parquet", index=False)
    (tmp_path / "pred.parquet").write_text("an earlier result")
    body = {"model": str(artifact), "input": {"path": "rows.parquet"}, "output": {"path": "pred.parquet"}}
    code = execute("PredictJob", PredictJobSpec.model_validate(body), run_context(PredictJobSpec.model_validate(body), base_dir=tmp_path),
                   termination_log=False)
    assert code == EXIT_BAD_INPUT and "overwrite" in capsys.readouterr().err
    assert (tmp_path / "pred.parquet").read_text() == "an earlier result"


def test_failure_after_the_start_leaves_the_old_output(artifact: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    _nan_feature(make_rows()).to_parquet(tmp_path / "rows.parquet", index=False)
    (tmp_path / "pred.parquet").write_text("an earlier result")
    body = {"model": str(artifact), "input": {"path": "rows.parquet"},
            "output": {"path": "pred.parquet", "overwrite": True}}
    code = execute("PredictJob", PredictJobSpec.model_validate(body), run_context(PredictJobSpec.model_validate(body), base_dir=tmp_path),
                   termination_log=False)
    assert code == EXIT_BAD_INPUT
    assert (tmp_path / "pred.parquet").read_text() == "an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.parquet", "rows.parquet"]
