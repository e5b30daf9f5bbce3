"""One small probe per framework (TensorFlow, PyTorch, JAX, CuPy) and the CPU.

Every probe answers the same questions the same way: is it installed, which
version and CUDA/cuDNN build, does it see a GPU, does a small matmul and one
tiny training step work on it, and how to set it up for the device chosen.
Frameworks are imported only inside these methods, never at module import.
"""

from __future__ import annotations

import abc
import importlib.metadata
import os
import time
from typing import Any

from gpubatch_jobs.devices.base import is_installed

MATMUL_N = 512


class FrameworkProbe(abc.ABC):
    """The interface; CPU is a real probe, not a special case."""

    name = "base"
    module = ""
    distributions: tuple[str, ...] = ()

    def installed(self) -> bool:
        return is_installed(self.module)

    def version(self) -> str | None:
        for dist in self.distributions:
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    def build_info(self) -> dict[str, Any]:
        return {}

    @abc.abstractmethod
    def sees_gpu(self) -> bool:
        """Whether the framework sees a GPU (may import the framework)."""

    @abc.abstractmethod
    def smoke(self) -> float:
        """A small matmul on the GPU, checked against the CPU; returns seconds."""

    @abc.abstractmethod
    def train_step(self) -> float:
        """One tiny gradient step on the GPU; returns seconds."""

    def setup(self, gpu: bool) -> None:  # noqa: B027 - a no-op by default, on purpose (the CPU)
        """Configure the framework for the chosen device (call before heavy use)."""


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _check_close(got: Any, want: Any, what: str) -> None:
    import numpy as np

    if not np.allclose(np.asarray(got, dtype="float64"), want, rtol=1e-2, atol=1e-2):
        raise RuntimeError(f"{what} on the GPU gave a wrong result (driver or hardware fault)")


def _reference() -> tuple[Any, Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((MATMUL_N, MATMUL_N)).astype("float32")
    b = rng.standard_normal((MATMUL_N, MATMUL_N)).astype("float32")
    return a, b, a.astype("float64") @ b.astype("float64")


class CpuProbe(FrameworkProbe):
    name = "cpu"
    module = "numpy"
    distributions = ("numpy",)

    def sees_gpu(self) -> bool:
        return False

    def smoke(self) -> float:
        a, b, want = _reference()
        return _timed(lambda: _check_close(a @ b, want, "matmul"))

    def train_step(self) -> float:
        import numpy as np

        def step() -> None:
            rng = np.random.default_rng(0)
            x, w = rng.standard_normal((64, 8)), np.zeros(8)
            y = x @ np.arange(8.0)
            grad = 2 * x.T @ (x @ w - y) / len(x)
            w -= 0.1 * grad
            if not np.isfinite(w).all():
                raise RuntimeError("CPU training step produced non-finite weights")

        return _timed(step)


class TensorFlowProbe(FrameworkProbe):
    name = "tensorflow"
    module = "tensorflow"
    distributions = ("tensorflow", "tensorflow-cpu", "tf-nightly")

    def _tf(self) -> Any:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
        import tensorflow as tf

        return tf

    def build_info(self) -> dict[str, Any]:
        info = dict(self._tf().sysconfig.get_build_info())
        return {"cuda": info.get("cuda_version"), "cudnn": info.get("cudnn_version")}

    def sees_gpu(self) -> bool:
        return bool(self._tf().config.list_physical_devices("GPU"))

    def smoke(self) -> float:
        tf = self._tf()
        a, b, want = _reference()

        def run() -> None:
            with tf.device("/GPU:0"):
                _check_close(tf.matmul(a, b).numpy(), want, "TensorFlow matmul")

        return _timed(run)

    def train_step(self) -> float:
        tf = self._tf()

        def run() -> None:
            with tf.device("/GPU:0"):
                w = tf.Variable(tf.zeros((8, 1)))
                x = tf.random.normal((64, 8), seed=0)
                y = tf.matmul(x, tf.reshape(tf.range(8, dtype=tf.float32), (8, 1)))
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean((tf.matmul(x, w) - y) ** 2)
                w.assign_sub(0.1 * tape.gradient(loss, w))
                if not bool(tf.reduce_all(tf.math.is_finite(w))):
                    raise RuntimeError("TensorFlow training step produced non-finite weights")

        return _timed(run)

    def setup(self, gpu: bool) -> None:
        tf = self._tf()
        try:
            if gpu:
                for device in tf.config.list_physical_devices("GPU"):
                    tf.config.experimental.set_memory_growth(device, True)
            else:
                tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            # Devices were already initialised; TF_FORCE_GPU_ALLOW_GROWTH set above covers growth.
            pass


class TorchProbe(FrameworkProbe):
    name = "torch"
    module = "torch"
    distributions = ("torch",)

    def build_info(self) -> dict[str, Any]:
        import torch

        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        return {"cuda": torch.version.cuda, "cudnn": cudnn}

    def sees_gpu(self) -> bool:
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.device_count() > 0)

    def smoke(self) -> float:
        import torch

        a, b, want = _reference()

        def run() -> None:
            out = torch.from_numpy(a).cuda() @ torch.from_numpy(b).cuda()
            torch.cuda.synchronize()
            _check_close(out.cpu().numpy(), want, "PyTorch matmul")

        return _timed(run)

    def train_step(self) -> float:
        import torch

        def run() -> None:
            torch.manual_seed(0)
            model = torch.nn.Linear(8, 1).cuda()
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            x = torch.randn(64, 8, device="cuda")
            loss = ((model(x) - x.sum(dim=1, keepdim=True)) ** 2).mean()
            loss.backward()
            opt.step()
            torch.cuda.synchronize()
            if not torch.isfinite(model.weight).all():
                raise RuntimeError("PyTorch training step produced non-finite weights")

        return _timed(run)

    def setup(self, gpu: bool) -> None:
        import torch

        if gpu:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True


class JaxProbe(FrameworkProbe):
    name = "jax"
    module = "jax"
    distributions = ("jax",)

    def _jax(self) -> Any:
        # Without this JAX takes 75% of GPU memory at its first use.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        import jax

        return jax

    def build_info(self) -> dict[str, Any]:
        jax = self._jax()
        try:
            backend = jax.extend.backend.get_backend() if hasattr(jax, "extend") else None
            return {"platform": getattr(backend, "platform_version", None)}
        except Exception:  # platform_version is informative only
            return {}

    def _gpu(self) -> Any:
        return self._jax().devices("gpu")[0]

    def sees_gpu(self) -> bool:
        try:
            return bool(self._jax().devices("gpu"))
        except RuntimeError:
            return False

    def smoke(self) -> float:
        jax = self._jax()
        a, b, want = _reference()

        def run() -> None:
            device = self._gpu()
            out = jax.numpy.matmul(jax.device_put(a, device), jax.device_put(b, device))
            _check_close(jax.device_get(out.block_until_ready()), want, "JAX matmul")

        return _timed(run)

    def train_step(self) -> float:
        jax = self._jax()
        jnp = jax.numpy

        def run() -> None:
            device = self._gpu()
            x = jax.device_put(jnp.ones((64, 8)), device)
            w = jax.device_put(jnp.zeros(8), device)
            grad = jax.grad(lambda w: jnp.mean((x @ w - x.sum(axis=1)) ** 2))(w)
            w = (w - 0.1 * grad).block_until_ready()
            if not bool(jnp.isfinite(w).all()):
                raise RuntimeError("JAX training step produced non-finite weights")

        return _timed(run)

    def setup(self, gpu: bool) -> None:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if not gpu:
            os.environ.setdefault("JAX_PLATFORMS", "cpu")


class CupyProbe(FrameworkProbe):
    name = "cupy"
    module = "cupy"
    distributions = ("cupy-cuda12x", "cupy-cuda11x", "cupy")
    # Leave room for other users of the GPU (a framework in the same pod, the display).
    POOL_FRACTION = 0.9

    def build_info(self) -> dict[str, Any]:
        import cupy

        runtime = cupy.cuda.runtime.runtimeGetVersion()
        return {"cuda": f"{runtime // 1000}.{(runtime % 1000) // 10}"}

    def sees_gpu(self) -> bool:
        import cupy

        try:
            return bool(cupy.cuda.runtime.getDeviceCount() > 0)
        except cupy.cuda.runtime.CUDARuntimeError:
            return False

    def smoke(self) -> float:
        import cupy

        a, b, want = _reference()

        def run() -> None:
            out = cupy.asarray(a) @ cupy.asarray(b)
            cupy.cuda.Device().synchronize()
            _check_close(cupy.asnumpy(out), want, "CuPy matmul")

        return _timed(run)

    def train_step(self) -> float:
        import cupy

        def run() -> None:
            x = cupy.random.standard_normal((64, 8), dtype="float32")
            w = cupy.zeros(8, dtype="float32")
            y = x @ cupy.arange(8, dtype="float32")
            w -= 0.1 * (2 * x.T @ (x @ w - y) / 64)
            cupy.cuda.Device().synchronize()
            if not bool(cupy.isfinite(w).all()):
                raise RuntimeError("CuPy training step produced non-finite weights")

        return _timed(run)

    def setup(self, gpu: bool) -> None:
        if gpu:
            import cupy

            cupy.get_default_memory_pool().set_limit(fraction=self.POOL_FRACTION)


CPU = CpuProbe()
# The auto chain, in the order tried: the frameworks, then the CPU.
GPU_PROBES: dict[str, FrameworkProbe] = {
    b.name: b for b in (TorchProbe(), TensorFlowProbe(), JaxProbe(), CupyProbe())
}
