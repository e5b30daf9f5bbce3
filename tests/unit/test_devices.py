"""The device layer: the instruction obeyed, the gpu device's error, OOM and GPU-failure recognition, backoff."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest

from gpubatch_jobs.contract import DeviceInstruction, instruction_for_policy
from gpubatch_jobs.devices import OomBackoff, is_oom_error, probe, select_device
from gpubatch_jobs.devices.oom import is_gpu_failure
from gpubatch_jobs.errors import GpuUnusable

AUTO, GPU, CPU = (instruction_for_policy(p) for p in ("auto", "gpu", "cpu"))


def test_auto_picks_the_gpu_when_probe_and_smoke_pass(fake_gpu) -> None:
    calls = fake_gpu(smoke_ok=True)
    choice = select_device(AUTO, framework="tensorflow")
    assert (choice.device, choice.framework, choice.fell_back) == ("gpu", "tensorflow", False)
    assert calls == ["tensorflow"]
    assert "passed the tensorflow smoke test" in choice.reason


def test_auto_tries_the_next_framework_when_one_fails(fake_gpu) -> None:
    calls = fake_gpu(smoke_ok={"torch": False, "tensorflow": True})
    choice = select_device(AUTO)
    assert choice.framework == "tensorflow" and calls == ["torch", "tensorflow"]


def test_auto_falls_back_to_cpu_when_the_smoke_fails(fake_gpu) -> None:
    fake_gpu(smoke_ok=False)
    choice = select_device(AUTO, framework="cupy")
    assert (choice.device, choice.fell_back) == ("cpu", True)
    assert "no kernel image" in choice.reason


def test_gpu_policy_without_usable_gpu_fails_clearly(fake_gpu) -> None:
    fake_gpu(smoke_ok=False)
    with pytest.raises(GpuUnusable) as caught:
        select_device(GPU, framework="torch")
    message = str(caught.value)
    assert caught.value.exit_code == 75
    for hint in ("device policy gpu", "nvidia.com/gpu", "CUDA_VISIBLE_DEVICES", "driver"):
        assert hint in message


def test_no_gpu_on_this_machine_means_cpu() -> None:
    assert select_device(AUTO).device == "cpu"
    with pytest.raises(GpuUnusable):
        select_device(GPU)


def test_cpu_policy_never_probes(fake_gpu) -> None:
    calls = fake_gpu(smoke_ok=True)
    assert select_device(CPU).device == "cpu" and calls == []


@pytest.mark.parametrize(("policy", "device", "on_failure"), [("auto", "gpu", "cpu"), ("gpu", "gpu", "exit"),
                                                            ("cpu", "cpu", "exit")])
def test_a_policy_becomes_an_instruction_in_one_place(policy: str, device: str, on_failure: str) -> None:
    assert instruction_for_policy(policy) == DeviceInstruction(device, on_failure)


@pytest.mark.parametrize(("env", "kind"), [("cpu", "cpu"), ("gpu", "gpu")])
def test_the_pod_obeys_the_operators_device(fake_gpu, env: str, kind: str) -> None:
    fake_gpu(smoke_ok=True)
    instruction = DeviceInstruction.from_env({"GPUBATCH_DEVICE": env, "GPUBATCH_ON_GPU_FAILURE": "exit"})
    assert instruction is not None and select_device(instruction).device == kind


def test_the_device_environment_holds_a_device_not_a_policy() -> None:
    for bad in ({"GPUBATCH_DEVICE": "auto"}, {"GPUBATCH_DEVICE": "tpu"}):
        with pytest.raises(ValueError, match=f"GPUBATCH_DEVICE='{bad['GPUBATCH_DEVICE']}'"):
            DeviceInstruction.from_env(bad)
    with pytest.raises(ValueError, match="GPUBATCH_ON_GPU_FAILURE='retry'"):
        DeviceInstruction.from_env({"GPUBATCH_DEVICE": "gpu", "GPUBATCH_ON_GPU_FAILURE": "retry"})
    assert DeviceInstruction.from_env({}) is None


def test_select_device_refuses_a_policy() -> None:
    with pytest.raises(TypeError, match="DeviceInstruction"):
        select_device("auto")  # type: ignore[arg-type]


@pytest.mark.parametrize(("message", "gpu_failure"), [
    ("CUDA error: an illegal memory access was encountered", True),
    ("CUDNN_STATUS_EXECUTION_FAILED", True),
    ("CUDA out of memory. Tried to allocate 20.00 MiB", False),
    ("No such file or directory: 'x.csv'", False),
])
def test_gpu_failures_are_told_from_oom_and_other_errors(message: str, gpu_failure: bool) -> None:
    assert is_gpu_failure(RuntimeError(message)) is gpu_failure


@pytest.mark.parametrize(
    ("visible", "count"), [(None, 2), ("", 0), ("1", 1), ("0,1", 2), ("5", 0), ("GPU-b", 1), ("-1", 0)]
)
def test_cuda_visible_devices_is_honoured(monkeypatch: pytest.MonkeyPatch, visible: str | None, count: int) -> None:
    from gpubatch_jobs.devices import cuda
    from gpubatch_jobs.devices.base import CudaProbe, GpuInfo

    gpus = [GpuInfo(0, "A", 1, 1, "GPU-a"), GpuInfo(1, "B", 1, 1, "GPU-b")]
    found = functools.cache(lambda: CudaProbe(gpus=gpus, source="nvml"))  # cached, as the real one
    monkeypatch.setattr(cuda, "_raw_probe", found)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert len(probe().gpus) == count


def test_fake_gpu_variable_drives_subprocesses() -> None:
    code = "from gpubatch_jobs.contract import instruction_for_policy; from gpubatch_jobs.devices import select_device; print(select_device(instruction_for_policy('auto'), 'tensorflow').as_dict())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"GPUBATCH_FAKE_GPU": "broken", "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}, check=True).stdout
    assert "'device': 'cpu'" in out and "faked by GPUBATCH_FAKE_GPU" in out


# --- out-of-memory recognition -------------------------------------------------


def _tensorflow_oom() -> BaseException:
    tf = pytest.importorskip("tensorflow")
    return tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[1048576,4096]")


def _tensorflow_real_oom() -> BaseException:
    tf = pytest.importorskip("tensorflow")
    try:
        with tf.device("/CPU:0"):
            tf.zeros((2**40, 2**20), dtype=tf.float32)  # 4 PiB: refused by the allocator
    except Exception as err:
        return err
    pytest.fail("allocating 4 PiB did not fail")


def _torch_oom() -> BaseException:
    torch = pytest.importorskip("torch")
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def _cupy_oom() -> BaseException:
    cupy = pytest.importorskip("cupy")
    return cupy.cuda.memory.OutOfMemoryError(2**40, 2**30, 2**30)


def _jax_oom() -> BaseException:
    jaxlib = pytest.importorskip("jaxlib")
    error = getattr(jaxlib, "xla_extension", None) and jaxlib.xla_extension.XlaRuntimeError
    if error is None:
        from jax.errors import JaxRuntimeError as error
    return error("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.")


def _keras_wrapped_oom() -> BaseException:
    inner = _tensorflow_oom()
    try:
        try:
            raise inner
        except Exception as err:
            raise RuntimeError("Graph execution error") from err
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    "make", [_tensorflow_oom, _tensorflow_real_oom, _keras_wrapped_oom, _torch_oom, _cupy_oom, _jax_oom],
    ids=["tensorflow", "tensorflow-real-allocation", "wrapped-cause", "torch", "cupy", "jax"],
)
def test_each_framework_oom_is_recognised(make) -> None:
    assert is_oom_error(make())


@pytest.mark.parametrize(
    "error",
    [ValueError("shapes (3,4) and (5,6) not aligned"), RuntimeError("CUDA error: an illegal memory access"),
     KeyError("memory")],
)
def test_other_errors_are_not_oom(error: BaseException) -> None:
    assert not is_oom_error(error)


def test_backoff_halves_until_it_fits_and_keeps_the_size() -> None:
    tried: list[int] = []

    def step(size: int) -> int:
        tried.append(size)
        if size > 200:
            raise MemoryError(f"cannot allocate {size} images")
        return size * 2

    backoff = OomBackoff(start=1000, minimum=10)
    assert backoff.run(step) == 250 and tried == [1000, 500, 250, 125]
    assert (backoff.size, backoff.backoffs) == (125, 3)
    tried.clear()
    backoff.run(step)
    assert tried == [125]  # the size that fitted is kept for the next batch


def test_backoff_gives_up_at_the_minimum_and_passes_other_errors() -> None:
    backoff = OomBackoff(start=8, minimum=2)
    with pytest.raises(MemoryError):
        backoff.run(lambda size: (_ for _ in ()).throw(MemoryError("out of memory")))
    assert backoff.size == 2
    with pytest.raises(ValueError):
        OomBackoff(start=8).run(lambda size: (_ for _ in ()).throw(ValueError("bad data")))
