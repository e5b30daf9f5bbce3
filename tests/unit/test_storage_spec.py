"""s3:// and spec.storage without a server: the spec, the pod's environment, the job ServiceAccount,
and local places (where push/pull do nothing). The server tests are in tests/s3/."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpubatch_jobs import contract
from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.spec import SpecError
from gpubatch_jobs.spec.common import PARENT_SEGMENT_RE
from gpubatch_jobs.spec.kinds import RenderJobSpec, TrainJobSpec
from gpubatch_jobs.spec.manifest import parse_spec
from gpubatch_jobs.storage import Place, driver_for, object_store, parent_and_name, split_pvc
from gpubatch_jobs.storage.azure import AzureDriver, parse_connection_string
from gpubatch_operator.builders.pod import storage_env, storage_volumes
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


@pytest.mark.parametrize("path", ["s3://Upper/x", "s3://ab/x", "s3:/bucket/x", "gs://Bucket/x", "gs://-b/x",
                                  "az://a_b/x", "az://con.tainer/x", "az://ab/x", "ftp://bucket/x"])
def test_bad_urls_are_refused_naming_the_forms(path: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec("RenderJob", {"input": {"path": path}, "output": {"path": "o.h5"}, "seqLen": 8}, source="m.yaml")
    assert "spec.input.path" in str(err.value)
    assert all(form in str(err.value) for form in ("s3://BUCKET/KEY", "gs://BUCKET/OBJECT", "az://CONTAINER/BLOB"))


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
    assert driver_for("s3://b-1/a/b.h5").parse("s3://b-1/a/b.h5") == ("b-1", "a/b.h5")  # type: ignore[union-attr]
    assert parent_and_name("gs://b_1.x/a/b.h5") == ("gs://b_1.x/a", "b.h5")
    assert parent_and_name("az://con-1/b.h5") == ("az://con-1", "b.h5")
    assert split_pvc("pvc://data/a/b") == ("data", "a/b") and split_pvc("s3://b-1/a") is None
    assert object_store("pvc://data/a") is None and object_store("/tmp/x") is None
    with pytest.raises(BadInput, match="names a container"):
        parent_and_name("az://con-1/")
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
    for url in ("s3://bucket-a/x", "gs://bucket-a/x", "az://container-a/x"):
        with pytest.raises(BadInput, match=f"{url[:5]} is not accepted here"):
            ctx.resolve(url, field_name="spec.x")


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


@pytest.mark.parametrize("path", ["s3://bucket-a/x.h5", "gs://bucket_a.b/x.h5", "az://container-a/x.h5",
                                  "pvc://data/x.h5"])
def test_every_scheme_validates(path: str) -> None:
    spec = parse_spec("RenderJob", {"input": {"path": path, "dataset": "d"}, "output": {"path": path}, "seqLen": 8},
                      source="m.yaml")
    assert spec.input.path == path


@pytest.mark.parametrize("path", ["s3://bucket-a/../x", "gs://bucket-a/a/../../x", "az://container-a/..",
                                  "pvc://data/../etc/x"])
def test_parent_segments_are_refused_in_every_scheme(path: str) -> None:
    with pytest.raises(SpecError, match="'..' segment"):
        parse_spec("RenderJob", {"input": {"path": path}, "output": {"path": "o.h5"}, "seqLen": 8}, source="m.yaml")
    assert __import__("re").search(PARENT_SEGMENT_RE, path)  # the CEL rule's pattern matches it too


def _refs(env: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}


def test_pod_env_maps_only_the_schemes_the_paths_use() -> None:
    spec = RenderJobSpec.model_validate({"input": {"path": "gs://in-bucket/series.h5", "dataset": "close"},
                                         "output": {"path": "az://out-container/x.h5"}, "seqLen": 8,
                                         "storage": {"secretName": "creds"}})
    env = storage_env(spec)
    refs = _refs(env)
    assert set(refs) == {"STORAGE_EMULATOR_HOST", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME",
                         "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"}
    assert all(r["name"] == "creds" and r["key"] == name and r["optional"] for name, r in refs.items())
    assert all("namespace" not in r for r in refs.values())  # only the job's own namespace
    plain = {e["name"]: e["value"] for e in env if "value" in e}
    assert plain == {"GOOGLE_APPLICATION_CREDENTIALS": "/var/run/secrets/gpubatch/gcs/service-account.json"}
    volumes, mounts = storage_volumes(spec)
    assert volumes == [{"name": "gpubatch-gcs-credentials", "secret": {
        "secretName": "creds", "defaultMode": 0o440,
        "items": [{"key": "service-account.json", "path": "service-account.json"}]}}]
    assert mounts == [{"name": "gpubatch-gcs-credentials", "mountPath": contract.GCS_CREDENTIALS_DIR,
                       "readOnly": True}]
    # an s3:// job gets neither the key file nor the Azure keys; no Secret: nothing at all
    assert storage_volumes(_render(storage={"secretName": "creds"})) == ([], [])
    assert "AZURE_STORAGE_ACCOUNT_KEY" not in _refs(storage_env(_render(storage={"secretName": "creds"})))
    assert storage_env(spec.model_copy(update={"storage": None})) == []
    assert storage_volumes(spec.model_copy(update={"storage": None})) == ([], [])


def test_azure_connection_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=a2V5==;BlobEndpoint=http://10.0.0.1:10000/acct;"
    assert parse_connection_string(text)["AccountKey"] == "a2V5=="
    with pytest.raises(BadInput, match="AZURE_STORAGE_CONNECTION_STRING"):
        parse_connection_string("AccountName=acct;garbage")
    for key in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
                "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(BadInput, match="AZURE_STORAGE_ACCOUNT_NAME"):
        AzureDriver().make_filesystem()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", text.replace("10.0.0.1:10000/acct", "10.0.0.1:10000/other"))
    with pytest.raises(BadInput, match="BlobEndpoint"):
        AzureDriver().make_filesystem()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", text)
    assert AzureDriver().endpoint() == "http://10.0.0.1:10000/acct"


def test_gcs_credentials_file_is_checked_naming_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gpubatch_jobs.storage.gcs import GcsDriver

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(BadInput, match="GOOGLE_APPLICATION_CREDENTIALS=.*cannot read it"):
        GcsDriver().make_filesystem()
    (tmp_path / "bad.json").write_text("{not json")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "bad.json"))
    with pytest.raises(BadInput, match="not JSON"):
        GcsDriver().make_filesystem()
