"""s3:// and spec.storage without a server: the spec, the pod's environment, the job ServiceAccount,
and local places (where push/pull do nothing). The server tests are in tests/s3/."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.spec import SpecError
from gpubatch_jobs.spec.kinds import RenderJobSpec, TrainJobSpec
from gpubatch_jobs.spec.manifest import parse_spec
from gpubatch_jobs.storage import Place, parent_and_name, split_s3
from gpubatch_operator.builders.pod import storage_env
from gpubatch_operator.builders.rbac import job_rbac_objects
from gpubatch_operator.settings import Settings, SettingsError


def _render(**extra: object) -> RenderJobSpec:
    return RenderJobSpec.model_validate({"input": {"path": "s3://data-bucket/series.h5", "dataset": "close"},
                                         "output": {"path": "s3://out.bucket-1/charts/x.h5"}, "seqLen": 8,
                                         **extra})


def test_s3_paths_and_secret_name_validate() -> None:
    spec = _render(storage={"secretName": "s3-credentials"})
    assert spec.storage is not None and spec.storage.secret_name == "s3-credentials"
    assert spec.wire()["storage"] == {"secretName": "s3-credentials"}


@pytest.mark.parametrize("path", ["s3://Upper/x", "s3://ab/x", "s3:/bucket/x", "gs://bucket/x"])
def test_bad_s3_urls_are_refused_naming_the_forms(path: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec("RenderJob", {"input": {"path": path}, "output": {"path": "o.h5"}, "seqLen": 8}, source="m.yaml")
    assert "spec.input.path" in str(err.value) and "s3://BUCKET/KEY" in str(err.value)


def test_bad_secret_name_is_refused() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec("TrainJob", {"input": {"path": "a.csv"}, "output": {"path": "o"}, "model": {"type": "dnn"},
                                "storage": {"secretName": "Not_A_Name"}}, source="m.yaml")
    assert "spec.storage.secretName" in str(err.value)


def test_pod_env_maps_the_secret_keys_to_the_aws_names() -> None:
    env = storage_env(_render(storage={"secretName": "creds"}))
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env}
    assert set(refs) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                         "AWS_REGION"}
    assert all(r["name"] == "creds" and r["key"] == name for name, r in refs.items())
    assert not refs["AWS_ACCESS_KEY_ID"]["optional"] and not refs["AWS_SECRET_ACCESS_KEY"]["optional"]
    assert refs["AWS_ENDPOINT_URL"]["optional"] and refs["AWS_REGION"]["optional"]
    # no Secret: nothing injected (workload identity through the ServiceAccount)
    assert storage_env(_render()) == []
    assert storage_env(TrainJobSpec.model_validate({"input": {"path": "a.csv"}, "output": {"path": "o"},
                                                    "model": {"type": "dnn"}})) == []


def test_job_service_account_annotations_from_settings() -> None:
    settings = Settings.from_env({"GPUBATCH_JOB_SERVICE_ACCOUNT_ANNOTATIONS":
                                  '{"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}'})
    annotations = dict(settings.job_service_account_annotations)
    account = job_rbac_objects("team-a", "gpubatch-job", annotations=annotations)[0]
    assert account["kind"] == "ServiceAccount"
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}
    assert "annotations" not in job_rbac_objects("team-a", "gpubatch-job")[0]["metadata"]
    with pytest.raises(SettingsError, match="GPUBATCH_JOB_SERVICE_ACCOUNT_ANNOTATIONS"):
        Settings.from_env({"GPUBATCH_JOB_SERVICE_ACCOUNT_ANNOTATIONS": "role=x"})


def test_urls_split() -> None:
    assert split_s3("s3://b-1/a/b.h5") == ("b-1", "a/b.h5")
    assert parent_and_name("s3://b-1/a/b.h5") == ("s3://b-1/a", "b.h5")
    assert parent_and_name("s3://b-1/b.h5") == ("s3://b-1", "b.h5")
    with pytest.raises(BadInput, match="names a bucket"):
        parent_and_name("s3://b-1/")


def test_local_places_are_their_own_folder(tmp_path: Path) -> None:
    ctx = RunContext(base_dir=tmp_path)
    place, name = ctx.output_file("out/x.h5", field_name="spec.output.path")
    assert not place.is_remote and place.path(name) == tmp_path / "out" / "x.h5"
    place.push(name)  # nothing to upload: already in place
    assert place.show(place.path(name)) == str(tmp_path / "out" / "x.h5")
    folder = ctx.output_folder("models/m", field_name="spec.output.path")
    assert folder.local_dir == tmp_path / "models" / "m" and isinstance(folder, Place)
    with pytest.raises(BadInput, match="s3:// is not accepted here"):
        ctx.resolve("s3://bucket-a/x", field_name="spec.x")


def test_spark_executor_pods_without_the_secrets_keys_refuse_s3_paths_naming_the_field(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpubatch_jobs.predict import run
    from gpubatch_jobs.spec.kinds import PredictJobSpec

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)
    spec = PredictJobSpec.model_validate({
        "model": "s3://models-bucket/rnn", "engine": "spark", "spark": {"executors": 2},
        "input": {"path": "rows.parquet", "idColumn": "doc", "positionColumn": "pos"},
        "output": {"path": "out.parquet"}})
    with pytest.raises(BadInput) as err:
        run(spec, RunContext(base_dir=tmp_path))
    assert "spec.model" in str(err.value) and "executor pods" in str(err.value)
    assert err.value.field == "spec.storage.secretName"
