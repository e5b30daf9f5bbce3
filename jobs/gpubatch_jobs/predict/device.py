"""Choose the device and the Keras backend before Keras is imported.

Keras fixes its backend at import, and TensorFlow fixes its visible GPUs at
first use, so both are settled here first: the backend is KERAS_BACKEND
(default tensorflow; a Keras already imported keeps its own), the device comes
from the shared device layer, and a CPU choice hides the GPU from the
framework (for torch through KERAS_TORCH_DEVICE).
"""

from __future__ import annotations

import os
import sys

from gpubatch_jobs.contract import DeviceInstruction
from gpubatch_jobs.devices import DeviceChoice, select_device, setup_framework
from gpubatch_jobs.quiet import framework_import, import_keras

BACKENDS = ("tensorflow", "torch", "jax")


def keras_backend() -> str:
    keras = sys.modules.get("keras")
    if keras is not None:
        return str(keras.backend.backend())
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def prepare_device(instruction: DeviceInstruction) -> tuple[DeviceChoice, str]:
    """(device choice, Keras backend) with the framework set up for that device."""
    backend = keras_backend()
    os.environ.setdefault("KERAS_BACKEND", backend)
    with framework_import():
        choice = select_device(instruction, framework=backend if backend in BACKENDS else "any")
        if backend == "torch" and not choice.is_gpu and "keras" not in sys.modules:
            os.environ["KERAS_TORCH_DEVICE"] = "cpu"
        if backend in BACKENDS:
            setup_framework(backend, choice)
        import_keras()
    return choice, backend
