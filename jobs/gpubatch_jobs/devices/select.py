"""The device an engine gets, and why: the instruction obeyed, the GPU checked.

`select_device(instruction, framework)` takes the contract's
`DeviceInstruction` (gpubatch_jobs/contract.py): the device the operator (or
`gpubatch run`) decided, and what to do if the GPU is unusable. It never sees
a policy. For `gpu` it probes the driver (cheap, no CUDA context), then asks
each candidate framework to run its smoke operation on the GPU; the first
that passes wins. A GPU is never trusted on the driver's word alone. When
none passes, `onGpuFailure: cpu` ends on the CPU with the reason recorded,
and `exit` raises GpuUnusable (exit 75) saying how to fix it.
"""

from __future__ import annotations

import functools
import logging

from gpubatch_jobs.contract import DeviceInstruction, instruction_for_policy
from gpubatch_jobs.devices import cuda
from gpubatch_jobs.devices.base import DeviceChoice
from gpubatch_jobs.devices.frameworks import CPU, GPU_PROBES, FrameworkProbe
from gpubatch_jobs.errors import GpuUnusable

log = logging.getLogger("gpubatch")

FIX_HINTS = (
    "check that the NVIDIA driver is installed on the node (nvidia-smi works), "
    "that the pod requests the GPU (resources.limits nvidia.com/gpu, or device.policy: gpu), "
    "that the framework has CUDA (pip install cupy-cuda12x, tensorflow[and-cuda] or a CUDA build of torch), "
    "and that CUDA_VISIBLE_DEVICES does not hide the GPU"
)


def requested_instruction(policy: str | None = None) -> DeviceInstruction:
    """For `gpubatch doctor`: the policy asked (--policy), else the instruction the operator gave
    this pod (the contract's GPUBATCH_DEVICE and GPUBATCH_ON_GPU_FAILURE), else policy auto.

    Raises ContractError (a ValueError) naming the variable or the policy when either is wrong."""
    if policy:
        return instruction_for_policy(policy)
    return DeviceInstruction.from_env() or instruction_for_policy("auto")


def candidates(framework: str) -> list[FrameworkProbe]:
    if framework == "any":
        return list(GPU_PROBES.values())
    if framework not in GPU_PROBES:
        raise ValueError(f"unknown framework {framework!r}; expected any, {', '.join(GPU_PROBES)}")
    return [GPU_PROBES[framework]]


@functools.cache
def smoke_test(name: str) -> None:
    """Raise unless framework `name` sees a GPU and computes correctly on it. Cached."""
    candidate = GPU_PROBES[name]
    if not candidate.sees_gpu():
        raise RuntimeError(f"{name} is installed but sees no GPU (a CPU-only build?)")
    candidate.smoke()


def select_device(instruction: DeviceInstruction, framework: str = "any") -> DeviceChoice:
    """The device for `framework` as `instruction` says, the GPU only once it passed a smoke test."""
    if not isinstance(instruction, DeviceInstruction):
        raise TypeError(f"select_device takes a DeviceInstruction, not {instruction!r}")
    if instruction.device == "cpu":
        return DeviceChoice("cpu", CPU.name, "the device is cpu")
    probe = cuda.probe()
    problems: list[str] = []
    if not probe.gpus:
        problems.append(probe.error or "no NVIDIA GPU visible")
    else:
        for candidate in candidates(framework):
            if not candidate.installed():
                problems.append(f"{candidate.name} is not installed")
                continue
            try:
                smoke_test(candidate.name)
            except Exception as err:  # any failure means: don't trust this GPU with this framework
                problems.append(f"{candidate.name}: {type(err).__name__}: {err}")
                continue
            gpu = probe.gpus[0]
            return DeviceChoice("gpu", candidate.name, f"{gpu.name} passed the {candidate.name} smoke test",
                                gpus=tuple(probe.gpus))
    summary = "; ".join(problems)
    if not instruction.fall_back_here:
        raise GpuUnusable(f"a GPU is required (device gpu, device policy gpu) but none is usable: {summary}. "
                          f"To fix: {FIX_HINTS}")
    log.info("using the CPU: %s", summary)
    return DeviceChoice("cpu", CPU.name, f"no usable GPU: {summary}", fell_back=True)


def setup_framework(framework: str, choice: DeviceChoice) -> None:
    """Configure `framework` for the chosen device: memory growth, no preallocation, pool limit."""
    if framework == "cpu":
        return
    if framework not in GPU_PROBES:
        raise ValueError(f"unknown framework {framework!r}")
    # For a CPU choice this hides the GPU from the framework (TensorFlow, JAX),
    # so a CPU run never lands on a GPU the pod can still see.
    GPU_PROBES[framework].setup(choice.is_gpu)


def reset_cache() -> None:
    """Forget probe and smoke results (tests, or after the environment changed)."""
    cuda.reset_cache()
    smoke_test.cache_clear()
