"""The contract (gpubatch_jobs/contract.py) is the one source: everything else is derived from it or equal to it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from gpubatch_jobs import contract
from gpubatch_jobs.kinds import KINDS, find
from gpubatch_jobs.spec import DevicePolicy, JobPhase
from gpubatch_operator import decide, state
from gpubatch_operator.builders.job import FAIL_AT_ONCE_EXIT_CODES
from gpubatch_operator.rbac import OPERATOR_RBAC
from gpubatch_operator.settings import DEVICE_POLICIES
from tests.operator.helpers import make_job

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gpubatch"


def test_every_kind_is_found_by_each_of_its_names() -> None:
    assert list(KINDS) == ["RenderJob", "TrainJob", "PredictJob"]
    for kind, plugin in KINDS.items():
        info = plugin.info
        assert isinstance(info, contract.KindInfo) and info.kind == kind
        for word in (kind, kind.upper(), info.plural, info.singular, info.short_name, info.command):
            assert find(word) is plugin
        assert plugin.model.model_fields["spec"].annotation is plugin.spec


def test_the_operators_rbac_names_exactly_the_contracts_kinds() -> None:
    ours = {resource.split("/")[0] for group, resource, _ in OPERATOR_RBAC if group == contract.API_GROUP}
    assert ours == {plugin.plural for plugin in KINDS.values()}


def test_the_crds_are_the_contracts_kinds() -> None:
    for info in (plugin.info for plugin in KINDS.values()):
        crd = yaml.safe_load((CHART / "crds" / f"{info.singular}.yaml").read_text())
        assert crd["spec"]["group"] == contract.API_GROUP
        assert crd["spec"]["names"]["plural"] == info.plural and crd["spec"]["names"]["kind"] == info.kind
        assert [v["name"] for v in crd["spec"]["versions"]] == [contract.API_VERSION]


def test_the_pod_failure_policy_and_the_reasons_come_from_the_exit_codes() -> None:
    assert FAIL_AT_ONCE_EXIT_CODES == sorted(contract.FAIL_AT_ONCE) == [contract.EXIT_BAD_INPUT,
                                                                       contract.EXIT_GPU_UNUSABLE]
    rule = make_job("x").cpu().obj()["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["onExitCodes"]["values"] == FAIL_AT_ONCE_EXIT_CODES
    assert rule["onExitCodes"]["containerName"] == contract.CONTAINER_NAME
    # Unexpected errors and host OOM are retried: never in the fail-at-once list.
    assert contract.EXIT_UNEXPECTED not in contract.FAIL_AT_ONCE and contract.EXIT_HOST_OOM not in contract.FAIL_AT_ONCE
    assert set(contract.EXIT_MEANINGS) == {0, 1, 2, 3, 75, 143}
    assert contract.EXIT_TERMINATED not in contract.FAIL_AT_ONCE  # a deleted pod is retried and resumes
    assert contract.FAIL_AT_ONCE[contract.EXIT_GPU_UNUSABLE] == contract.GPU_UNUSABLE == decide.GPU_UNUSABLE


def test_phases_conditions_and_policies_are_the_contracts() -> None:
    assert tuple(p.value for p in JobPhase) == contract.PHASES
    assert (state.PENDING, state.RUNNING, state.SUCCEEDED, state.FAILED) == contract.PHASES
    assert state.FINAL == contract.FINAL_PHASES
    assert tuple(p.value for p in DevicePolicy) == contract.DEVICE_POLICIES == DEVICE_POLICIES


def test_the_chart_schema_enums_are_the_contracts() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert tuple(schema["properties"]["defaults"]["properties"]["devicePolicy"]["enum"]) == contract.DEVICE_POLICIES
    crd = yaml.safe_load((CHART / "crds" / "renderjob.yaml").read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert tuple(props["spec"]["properties"]["device"]["properties"]["policy"]["enum"]) == contract.DEVICE_POLICIES
    assert tuple(props["status"]["properties"]["phase"]["enum"]) == contract.PHASES
    assert tuple(props["status"]["properties"]["device"]["enum"]) == contract.DEVICES


def test_the_job_container_gets_exactly_the_contracts_environment() -> None:
    container = make_job("x").gpus(1).obj()["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"] for e in container["env"]}
    assert names == {contract.ENV_SPEC, contract.ENV_DEVICE, contract.ENV_ON_GPU_FAILURE, contract.ENV_NAME,
                     contract.ENV_POD_NAME, contract.ENV_POD_NAMESPACE}
    assert container["name"] == contract.CONTAINER_NAME
    assert container["terminationMessagePath"] == contract.TERMINATION_LOG


def test_the_labels_on_jobs_and_pods_are_the_contracts() -> None:
    job = make_job("x").cpu().obj()
    labels = job["spec"]["template"]["metadata"]["labels"]
    for label in (contract.MANAGED_BY_LABEL, contract.KIND_LABEL, contract.OWNER_NAME_LABEL,
                  contract.OWNER_UID_LABEL, contract.DEVICE_LABEL, contract.ATTEMPT_LABEL):
        assert label in labels and label in job["metadata"]["labels"]
    assert f"{contract.MANAGED_BY_LABEL}={labels[contract.MANAGED_BY_LABEL]}" == contract.MANAGED_SELECTOR


def test_the_chart_leaves_the_test_hook_off() -> None:
    templates = " ".join(p.read_text() for p in (CHART / "templates").iterdir())
    assert "GPUBATCH_TEST_HOOKS" not in templates  # the operator's default: off


def test_fallback_on_error_is_a_deprecated_alias_of_fallback_on_gpu_failure() -> None:
    import pytest

    from gpubatch_jobs.spec import SpecError, parse_spec

    base = {"input": {"path": "a.h5"}, "output": {"path": "b.h5"}}
    assert parse_spec("RenderJob", base).device.fallback_on_gpu_failure is True
    assert parse_spec("RenderJob", {**base, "fallbackOnError": False}).device.fallback_on_gpu_failure is False
    agree = {**base, "fallbackOnError": False, "device": {"fallbackOnGpuFailure": False}}
    assert parse_spec("RenderJob", agree).device.fallback_on_gpu_failure is False
    with pytest.raises(SpecError, match="remove fallbackOnError"):
        parse_spec("RenderJob", {**base, "fallbackOnError": False, "device": {"fallbackOnGpuFailure": True}})
