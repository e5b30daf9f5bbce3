"""One compiled model call per fixed batch shape, with windows gathered on the model's device.

The seed called `model.predict()` for every 64 windows: each call builds a
data pipeline, and every odd-sized last batch retraces the graph. Here the
document rows are uploaded once per chunk; each batch sends only the row
indices of its windows (batch x window int32), and one compiled function,
traced once for its (batch, window) shape, gathers the rows, zeroes the
padded steps and runs the model. The last batch is padded to the same shape.

Backends: TensorFlow (`tf.function` with a fixed input signature, XLA on the
CPU), torch (`inference_mode`, cuDNN kernels on the GPU; Keras' torch backend
picks cuDNN for fixed shapes) and anything else Keras runs through
`predict_on_batch` on host-gathered windows.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger("gpubatch.predict")


class CompiledModel:
    """The model behind one fixed (batch, window, features) shape.

    `bind(features)` places a chunk's scaled rows on the device; `launch` starts
    a batch and returns a handle without waiting; `fetch` waits and returns
    numpy predictions. Launching batch i+1 before fetching batch i keeps a GPU
    busy while the host merges.
    """

    def __init__(self, model: Any, *, batch: int, window: int, n_features: int, backend: str,
                 gpu: bool, pad_value: float = 0.0) -> None:
        self.model = model
        self.batch = batch
        self.window = window
        self.n_features = n_features
        self.backend = backend
        self.gpu = gpu
        self.pad_value = float(pad_value)
        self.calls = 0
        self.shapes: set[tuple[int, ...]] = set()  # (batch, rows, features) of each launch's input
        self._features: Any = None
        self._build()

    # -- backend-specific parts ----------------------------------------
    def _build(self) -> None:
        if self.backend == "tensorflow":
            self._build_tensorflow()
        elif self.backend == "torch":
            self._build_torch()
        else:
            self._fn: Any = None

    def _build_tensorflow(self) -> None:
        import tensorflow as tf

        model, pad = self.model, self.pad_value

        def step(features: Any, rows: Any, mask: Any) -> Any:
            windows = tf.gather(features, rows)
            windows = tf.where(mask[..., None], windows, tf.constant(pad, tf.float32))
            return model(windows, training=False)

        signature = [
            tf.TensorSpec((None, self.n_features), tf.float32),
            tf.TensorSpec((self.batch, self.window), tf.int32),
            tf.TensorSpec((self.batch, self.window), tf.bool),
        ]
        # XLA fuses the recurrent loop on the CPU (about 1.3x); on the GPU the
        # cuDNN RNN kernel is faster and XLA cannot compile it.
        self._jit = not self.gpu
        self._fn = tf.function(step, input_signature=signature, jit_compile=self._jit, reduce_retracing=False)
        self._device = "/GPU:0" if self.gpu else "/CPU:0"

    def _build_torch(self) -> None:
        import torch

        self._torch = torch
        self._device = torch.device("cuda" if self.gpu else "cpu")

    # -- the interface ---------------------------------------------------
    def bind(self, features: np.ndarray) -> None:
        """Place a chunk's scaled rows (n_rows, n_features) float32 on the model's device."""
        self.use(self.to_device(features))

    def to_device(self, features: np.ndarray) -> Any:
        """The chunk's rows as this backend's array on the model's device (shareable between batch sizes)."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        if self.backend == "tensorflow":
            import tensorflow as tf

            if not self.gpu:
                # On the CPU the model can read the array where it is (DLPack shares the buffer): no copy
                # of a chunk of hundreds of MB. The caller keeps the array unchanged while it is placed.
                try:
                    return tf.experimental.dlpack.from_dlpack(features.__dlpack__())
                except Exception as err:  # noqa: BLE001 - e.g. an alignment TensorFlow refuses: copy instead
                    log.debug("DLPack hand-over refused (%s); copying the rows", err)
            with tf.device(self._device):
                return tf.identity(tf.convert_to_tensor(features))
        if self.backend == "torch":
            return self._torch.from_numpy(features).to(self._device)
        return features

    def use(self, placed: Any) -> None:
        """Take rows `to_device` placed (by this model or another of the same backend and device)."""
        self._features = placed

    def launch(self, rows: np.ndarray, mask: np.ndarray) -> Any:
        """Start the model on one batch: rows/mask are (batch, window); returns a handle."""
        self.calls += 1
        self.shapes.add((self.batch, *tuple(int(d) for d in self._features.shape)))
        if self.backend == "tensorflow":
            try:
                return self._fn(self._features, rows.astype(np.int32), mask)
            except Exception as err:
                if not self._jit or _is_oom(err):
                    raise
                # Some layers have no XLA kernel: run the same graph without XLA.
                log.info("XLA compilation failed (%s); running without jit_compile", type(err).__name__)
                self._jit = False
                self._build_tensorflow_without_jit()
                return self._fn(self._features, rows.astype(np.int32), mask)
        if self.backend == "torch":
            torch = self._torch
            with torch.inference_mode():
                index = torch.from_numpy(rows.astype(np.int64)).to(self._device, non_blocking=True)
                keep = torch.from_numpy(mask).to(self._device, non_blocking=True)
                windows = self._features[index]
                windows = torch.where(keep[..., None], windows, torch.full_like(windows[:1, :1], self.pad_value))
                return self.model(windows, training=False)
        windows = self._features[rows]
        windows[~mask] = self.pad_value
        return self.model.predict_on_batch(windows)

    def fetch(self, handle: Any) -> np.ndarray:
        """Wait for a launched batch; (batch, window, classes) float32 numpy."""
        if self.backend == "torch":
            return handle.detach().float().cpu().numpy()  # type: ignore[no-any-return]
        return np.asarray(handle, dtype=np.float32)

    @property
    def traces(self) -> int:
        """How often the model graph was traced (1 when no batch forced a retrace)."""
        if self.backend == "tensorflow":
            return int(self._fn.experimental_get_tracing_count())
        return 1 if self.calls else 0

    def _build_tensorflow_without_jit(self) -> None:
        import tensorflow as tf

        python_fn = self._fn.python_function
        self._fn = tf.function(python_fn, input_signature=self._fn.input_signature, jit_compile=False)


def _is_oom(err: BaseException) -> bool:
    from gpubatch_jobs.devices import is_oom_error

    return bool(is_oom_error(err))
