"""A fourth kind plugs in by one declaration (gpubatch_jobs/kinds/), and every side derives from it.

The toy kind below, EchoJob, is the whole of what a new kind writes: a spec model, an
engine (`run` in this module), and a `KindPlugin` with one hook (`copies` pods of an
Indexed Job). The test then drives it through CRD generation, manifest parsing,
decide(), the Job builder and `gpubatch run`, none of which names it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field

from gpubatch_jobs import kinds
from gpubatch_jobs.cli import main
from gpubatch_jobs.contract import KIND_LABEL, KindInfo
from gpubatch_jobs.crds import crd_for
from gpubatch_jobs.runtime import RunContext, write_text_atomic
from gpubatch_jobs.spec import SpecError, load_manifest, parse_spec
from gpubatch_jobs.spec.common import CommonSpec
from gpubatch_operator.builders.job import JobRequest, build_job
from gpubatch_operator.decide import CreateJob, World, decide
from gpubatch_operator.settings import Settings

# --- the toy kind: all a new kind writes -------------------------------------------------------


class EchoJobSpec(CommonSpec):
    """Upper-cases a text file (a toy kind)."""

    prefix: str = Field("", max_length=16, description="Written before the text.")
    copies: int = Field(1, ge=1, le=8, description="Pods of one Indexed Job.")


@dataclass(frozen=True)
class Copies:
    field: str = "copies"

    def count(self, spec: EchoJobSpec) -> int:
        return spec.copies


def run(spec: EchoJobSpec, ctx: RunContext) -> dict[str, Any]:
    text = ctx.input_file(spec.input.path, field_name="spec.input.path").read_text()
    place, name = ctx.output_file(spec.output.path, field_name="spec.output.path")
    write_text_atomic(place.path(name), spec.prefix + text.upper())
    place.push(name)
    ctx.progress(1, 1, stage="echo", force=True)
    return {"ok": True, "lines": len(text.splitlines())}


ECHO = kinds.KindPlugin(KindInfo("EchoJob", "echojobs", "echojob", "ej", "echo"), spec=EchoJobSpec,
                        engine=__name__, shards=Copies())

# ------------------------------------------------------------------------------------------------


@pytest.fixture
def echo_kind() -> Iterator[kinds.KindPlugin]:
    kinds.register(ECHO)
    try:
        yield ECHO
    finally:
        del kinds.KINDS["EchoJob"]


def manifest(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "gpubatch.dev/v1alpha1", "kind": "EchoJob", "metadata": {"name": "shout"},
            "spec": {"input": {"path": "in.txt"}, "output": {"path": "out.txt"}, **spec}}


def test_the_toy_kind_gets_a_crd_from_its_declaration(echo_kind: kinds.KindPlugin) -> None:
    crd = crd_for("ej")
    assert crd["metadata"]["name"] == "echojobs.gpubatch.dev"
    assert crd["spec"]["names"] | {"categories": None} == {
        "kind": "EchoJob", "listKind": "EchoJobList", "plural": "echojobs", "singular": "echojob",
        "shortNames": ["ej"], "categories": None}
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["copies"]["maximum"] == 8 and "input" in spec["required"]
    yaml.safe_dump(crd)  # structural and serialisable, as `gpubatch crds` writes it


def test_manifests_of_the_toy_kind_parse_and_fail_by_field(echo_kind: kinds.KindPlugin, tmp_path: Path) -> None:
    path = tmp_path / "echo.yaml"
    path.write_text(yaml.safe_dump(manifest(copies=3)))
    resource = load_manifest(path)
    assert resource.kind == "EchoJob" and resource.spec.copies == 3  # type: ignore[attr-defined]
    with pytest.raises(SpecError, match="spec.copies"):
        parse_spec("echo", {"input": {"path": "a"}, "output": {"path": "b"}, "copies": 9})
    with pytest.raises(ValueError, match="already names EchoJob"):
        kinds.register(kinds.KindPlugin(KindInfo("OtherJob", "otherjobs", "otherjob", "ej", "other"),
                                        spec=EchoJobSpec, engine=__name__))


def test_decide_and_the_builder_shape_the_toy_kinds_job_by_its_hook(echo_kind: kinds.KindPlugin) -> None:
    spec = parse_spec("EchoJob", manifest(copies=3, device={"policy": "cpu"})["spec"])
    world = World(plugin=echo_kind, name="shout", namespace="ns", uid="u-1", generation=1, spec=spec,
                  spec_error=None, status={}, jobs=[], pods=[], gpu_nodes=0, now=1000.0)
    plan = decide(world)
    assert plan.outcome is not None and plan.outcome.phase == "Pending"
    [create] = plan.actions
    assert isinstance(create, CreateJob) and create.job_name == "shout-echo" and create.device == "cpu"
    job = build_job(JobRequest(plugin=echo_kind, name="shout", namespace="ns", uid="u-1", spec=spec,
                               job_name=create.job_name, device=create.device), Settings())
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert job["spec"]["completionMode"] == "Indexed"
    pod = job["spec"]["template"]
    assert pod["spec"]["containers"][0]["command"] == ["gpubatch-job", "echo"]
    assert pod["metadata"]["labels"][KIND_LABEL] == "echojob"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "EchoJob"
    assert pod["spec"]["serviceAccountName"] == Settings().job_service_account  # no Spark driver hook


def test_gpubatch_run_runs_the_toy_kinds_engine(echo_kind: kinds.KindPlugin, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    path = tmp_path / "echo.yaml"
    path.write_text(yaml.safe_dump(manifest(prefix="> ", device={"policy": "cpu"})))
    assert main(["run", str(path), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["kind"] == "EchoJob" and summary["lines"] == 2
    assert (tmp_path / "out.txt").read_text() == "> ONE\nTWO\n"
    # Its shard hook drives `--shard` too: N must be the spec's copies.
    assert main(["run", str(path), "--quiet", "--shard", "0/2"]) == 1
    assert "spec.copies is 1" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["message"]
