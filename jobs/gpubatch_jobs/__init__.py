"""gpubatch_jobs: the engine that runs inside every gpubatch pod and on laptops.

Importing this package is cheap on purpose: the API models, the command line
and the device probes load no ML framework. TensorFlow, PyTorch, JAX, CuPy,
PySpark and matplotlib are imported lazily by the code paths that need them.
"""

__version__ = "0.1.0"
