"""Import Keras/TensorFlow without their noise and without modules the engines never use.

TensorFlow writes C++ log lines straight to file descriptor 2 while it loads
(`WARNING: All log messages before absl::InitializeLog() ...`, `I0000 ...
cudart_stub.cc: Could not find cuda drivers`, `E0000 ... failed call to
cuInit`, oneDNN notices). On a CPU machine these read as failures, and
`TF_CPP_MIN_LOG_LEVEL` does not reach the ones printed before absl starts.
`quiet_native_stderr` sends fd 2 to a temporary file for the duration of the
import and device set-up, then writes back every line that is not one of
those known notices, so a real error still shows. `gpubatch --verbose`
(GPUBATCH_VERBOSE=1) or GPUBATCH_LOG_LEVEL=DEBUG in a pod turns this off.

`import_keras` also keeps Keras from importing scikit-learn and matplotlib
(its optional wrappers and plotting helpers, guarded by `try: import`):
together 1-2 s of the import on a laptop where they are installed, for code
no engine calls. The blocks are lifted right after, so a later import of
either works as usual.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

# Lines TensorFlow/XLA print while loading or probing for CUDA on a machine without a usable GPU.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ (cudart_stub|cuda_platform|cuda_executor|cuda_diagnostics|cuda_dnn|cuda_fft|cuda_blas"
    r"|cpu_feature_guard|port|computation_placer|device_compiler|service|xla_bridge|gpu_device)\.cc:\d+\]"
    r"|.*(oneDNN custom operations are on|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions|rebuild TensorFlow with the appropriate compiler flags"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|Could not find cuda drivers on your machine)"
    r")"
)

OPTIONAL_FOR_KERAS = ("sklearn", "matplotlib")


def verbose() -> bool:
    return os.environ.get("GPUBATCH_VERBOSE") == "1" or os.environ.get("GPUBATCH_LOG_LEVEL", "").upper() == "DEBUG"


def quiet_tensorflow_logs() -> None:
    """TensorFlow's own log threshold: errors and worse only, unless verbose."""
    if not verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# One redirect of fd 2 for the whole process, however many contexts (threads) ask for it:
# the first entry installs it, the last exit restores fd 2 and prints what was not noise.
_redirect_lock = threading.Lock()
_redirect: dict[str, Any] = {"depth": 0, "saved": None, "sink": None}


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Drop TensorFlow's start-up notices from fd 2 (see the module docstring); keep everything else.

    Safe to enter from several threads at once (the prediction engine imports
    TensorFlow on a thread while the main thread reads the input): fd 2 is
    redirected while any of them is inside, and `release_native_stderr` ends
    it early for a thread that must report an error now.
    """
    if verbose():
        yield
        return
    with _redirect_lock:
        if _redirect["depth"] == 0 and not _install_redirect():
            installed = False
        else:
            _redirect["depth"] += 1
            installed = True
    try:
        yield
    finally:
        if installed:
            with _redirect_lock:
                if _redirect["depth"] > 0:  # 0: released early by release_native_stderr
                    _redirect["depth"] -= 1
                    if _redirect["depth"] == 0:
                        _restore_redirect()


def release_native_stderr() -> None:
    """Give fd 2 back now, whoever is still inside `quiet_native_stderr` (they find it released)."""
    with _redirect_lock:
        if _redirect["depth"] > 0:
            _redirect["depth"] = 0
            _restore_redirect()


def _install_redirect() -> bool:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (an embedded interpreter): nothing to quiet
        return False
    sink = tempfile.TemporaryFile()
    os.dup2(sink.fileno(), 2)
    _redirect.update(saved=saved, sink=sink)
    return True


def _restore_redirect() -> None:
    saved, sink = _redirect["saved"], _redirect["sink"]
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(saved, 2)
    os.close(saved)
    _redirect.update(saved=None, sink=None)
    with sink:
        sink.seek(0)
        kept = [line for line in sink.read().decode(errors="replace").splitlines(keepends=True)
                if not NOISE.match(line)]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


@contextmanager
def without_optional_imports() -> Iterator[None]:
    """While TensorFlow/Keras load: `import sklearn` and `import matplotlib` fail (Keras guards both)."""
    blocked = [name for name in OPTIONAL_FOR_KERAS if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


@contextmanager
def framework_import() -> Iterator[None]:
    """The context for importing and setting up TensorFlow/Keras: quiet, without optional modules.

    (`import tensorflow` imports Keras itself, so the device set-up belongs inside.)
    """
    quiet_tensorflow_logs()
    with quiet_native_stderr(), without_optional_imports():
        yield


def import_keras() -> ModuleType:
    """`import keras`, quietly, without its optional scikit-learn and matplotlib imports."""
    if "keras" in sys.modules:
        return sys.modules["keras"]
    with framework_import():
        import keras
    return keras
