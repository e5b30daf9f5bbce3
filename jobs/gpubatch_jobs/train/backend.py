"""Choose the Keras backend, the device and the precision before Keras loads.

Keras 3 reads KERAS_BACKEND once, at its first import, so the backend must be
set before anything imports keras; a process that already loaded keras with
another backend cannot switch, and says so. The device comes from the shared
device layer (smoke-tested GPU, else the CPU with the reason), and mixed
precision `auto` turns on only on a GPU with tensor cores (compute
capability 7.0 or newer).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from gpubatch_jobs.contract import DeviceInstruction
from gpubatch_jobs.devices import DeviceChoice, select_device, setup_framework
from gpubatch_jobs.devices.base import is_installed
from gpubatch_jobs.errors import BadInput

log = logging.getLogger("gpubatch.train")

BACKEND_MODULES = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}
MIXED_PRECISION_MIN_CC = (7, 0)


@dataclass
class Runtime:
    """The device and numeric set-up a training run uses."""

    backend: str
    choice: DeviceChoice
    mixed_precision: bool
    mixed_precision_reason: str
    compute_capability: str | None = None

    @property
    def device(self) -> str:
        return self.choice.device

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.choice.device,
            "backend": self.backend,
            "deviceReason": self.choice.reason,
            "fellBack": self.choice.fell_back,
            "gpus": [g.name for g in self.choice.gpus],
            "computeCapability": self.compute_capability,
            "mixedPrecision": self.mixed_precision,
            "mixedPrecisionReason": self.mixed_precision_reason,
        }


def require_backend(backend: str) -> None:
    """Make `backend` the Keras backend of this process, or explain why it cannot be."""
    loaded = sys.modules.get("keras")
    if loaded is not None:
        current = loaded.backend.backend()
        if current != backend:
            raise BadInput(
                f"this process already loaded Keras with the {current!r} backend, and Keras cannot switch "
                f"backends once loaded; run this TrainJob (backend {backend!r}) in a fresh process "
                "(gpubatch run or a pod does that)",
                field="spec.backend",
            )
        return
    if not is_installed(BACKEND_MODULES[backend]):
        raise BadInput(
            f"backend {backend!r} needs the {BACKEND_MODULES[backend]} package, which is not installed here; "
            "install it or choose backend: tensorflow",
            field="spec.backend",
        )
    os.environ["KERAS_BACKEND"] = backend


def prepare_runtime(backend: str, instruction: DeviceInstruction, mixed_precision: str,
                    group: Any = None) -> Runtime:
    """Select and set up the device for `backend`, then decide mixed precision; imports Keras, quietly.

    A worker of a multi-worker group (train/distributed.py) joins its group first:
    TensorFlow's strategy must exist before any op runs, the smoke test's included.
    A group member never falls back to the CPU on its own (the group would be a
    mix): it exits 75 and the whole group is moved.
    """
    from gpubatch_jobs.quiet import framework_import, import_keras

    require_backend(backend)
    with framework_import():
        if group is not None:
            if instruction.device == "gpu":
                instruction = DeviceInstruction("gpu", "exit")
            group.prepare(gpu=instruction.device == "gpu")
        choice = select_device(instruction, framework=backend)
        if choice.device == "cpu":
            # Keras' torch backend picks CUDA on its own whenever torch sees a GPU.
            os.environ["KERAS_TORCH_DEVICE"] = "cpu"
        setup_framework(backend, choice)
        import_keras()
    capability = _compute_capability(choice)
    enabled, reason = decide_mixed_precision(mixed_precision, choice, capability)
    return Runtime(backend, choice, enabled, reason, capability)


def _compute_capability(choice: DeviceChoice) -> str | None:
    if not choice.is_gpu or not choice.gpus:
        return None
    return choice.gpus[0].compute_capability or None


def _parse_capability(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        major, _, minor = text.partition(".")
        return int(major), int(minor or 0)
    except ValueError:
        return None


def decide_mixed_precision(setting: str, choice: DeviceChoice, capability: str | None) -> tuple[bool, str]:
    """(enabled, why) for spec.mixedPrecision auto|on|off on this device."""
    if setting == "off":
        return False, "mixedPrecision is off"
    if setting == "on":
        if not choice.is_gpu:
            return True, "mixedPrecision is on (on the CPU float16 is slow; auto would leave it off)"
        return True, "mixedPrecision is on"
    if not choice.is_gpu:
        return False, "auto: the CPU gains nothing from float16"
    parsed = _parse_capability(capability)
    if parsed is None:
        return False, "auto: the GPU's compute capability is unknown"
    if parsed < MIXED_PRECISION_MIN_CC:
        return False, f"auto: compute capability {capability} has no tensor cores (7.0 needed)"
    return True, f"auto: compute capability {capability} has tensor cores"


def apply_precision(runtime: Runtime) -> None:
    """Set the Keras dtype policy (call after Keras is imported, before models are built)."""
    import keras

    keras.config.set_dtype_policy("mixed_float16" if runtime.mixed_precision else "float32")
