"""The device layer: the auto chain, the gpu policy's error, OOM recognition and backoff."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gpubatch_jobs.devices import OomBackoff, is_oom_error, probe, select_device
from gpubatch_jobs.errors import GpuUnusable


def test_auto_picks_the_gpu_when_probe_and_smoke_pass(fake_gpu) -> None:
    calls = fake_gpu(smoke_ok=True)
    choice = select_device("auto", framework="tensorflow")
    assert (choice.kind, choice.backend, choice.fell_back) == ("gpu", "tensorflow", False)
    assert calls == ["tensorflow"]
    assert "passed the tensorflow smoke test" in choice.reason


def test_auto_tries_the_next_framework_when_one_fails(fake_gpu) -> None:
    calls = fake_gpu(smoke_ok={"torch": False, "tensorflow": True})
    choice = select_device("auto")
    assert choice.backend == "tensorflow" and calls == ["torch", "tensorflow"]


def test_auto_falls_back_to_cpu_when_the_smoke_fails(fake_gpu) -> None:
    fake_gpu(smoke_ok=False)
    choice = select_device("auto", framework="cupy")
    assert (choice.kind, choice.fell_back) == ("cpu", True)
    assert "no kernel image" in choice.reason


def test_gpu_policy_without_usable_gpu_fails_clearly(fake_gpu) -> None:
    fake_gpu(smoke_ok=False)
    with pytest.raises(GpuUnusable) as caught:
        select_device("gpu", framework="torch")
    message = str(caught.value)
    assert caught.value.exit_code == 75
    for hint in ("device policy gpu", "nvidia.com/gpu", "CUDA_VISIBLE_DEVICES", "driver"):
        assert hint in message


def test_no_gpu_on_this_machine_means_cpu() -> None:
    assert select_device("auto").kind == "cpu"
    with pytest.raises(GpuUnusable):
        select_device("gpu")


def test_cpu_policy_never_probes(fake_gpu) -> None:
    calls = fake_gpu(smoke_ok=True)
    assert select_device("cpu").kind == "cpu" and calls == []


@pytest.mark.parametrize(("env", "kind"), [("cpu", "cpu"), ("gpu", "gpu"), ("auto", "gpu")])
def test_environment_override(fake_gpu, monkeypatch: pytest.MonkeyPatch, env: str, kind: str) -> None:
    fake_gpu(smoke_ok=True)
    monkeypatch.setenv("GPUBATCH_DEVICE", env)
    assert select_device(None).kind == kind


def test_bad_environment_override_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUBATCH_DEVICE", "tpu")
    with pytest.raises(ValueError, match="GPUBATCH_DEVICE='tpu'"):
        select_device(None)


@pytest.mark.parametrize(
    ("visible", "count"), [(None, 2), ("", 0), ("1", 1), ("0,1", 2), ("5", 0), ("GPU-b", 1), ("-1", 0)]
)
def test_cuda_visible_devices_is_honoured(monkeypatch: pytest.MonkeyPatch, visible: str | None, count: int) -> None:
    from gpubatch_jobs.devices import cuda
    from gpubatch_jobs.devices.base import CudaProbe, GpuInfo

    gpus = [GpuInfo(0, "A", 1, 1, "GPU-a"), GpuInfo(1, "B", 1, 1, "GPU-b")]
    monkeypatch.setattr(cuda, "_raw_probe", lambda: CudaProbe(gpus=gpus, source="nvml"))
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert len(probe().gpus) == count


def test_fake_gpu_variable_drives_subprocesses() -> None:
    code = "from gpubatch_jobs.devices import select_device; print(select_device('auto', 'tensorflow').as_dict())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"GPUBATCH_FAKE_GPU": "broken", "PATH": "/usr/bin:/bin"}, check=True).stdout
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
