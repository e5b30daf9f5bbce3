"""TrainJob `workers: N`: one process of a group training with the framework's own engine.

Every worker (a pod of an Indexed Job, or a process of `gpubatch run --workers N`)
gets the same spec, the list of all workers' `host:port` (GPUBATCH_WORKER_HOSTS,
in index order) and its own index (JOB_COMPLETION_INDEX), and builds the
framework's cluster configuration from them:

- backend tensorflow: TF_CONFIG, then `tf.distribute.MultiWorkerMirroredStrategy`
  (gRPC collectives). The model is built and compiled in the strategy's scope and
  `fit` is given the *global* batch, which TensorFlow splits across the workers;
  every worker reads the same data and seeds, so shuffle orders agree.
- backend jax: `jax.distributed.initialize` (worker 0's address is the
  coordinator) and `keras.distribution.DataParallel` over every process's devices;
  each process feeds its own slice of every global batch.

Worker 0 is the chief: it alone writes checkpoints and publishes the artifact;
the others read the checkpoint to resume at the same epoch, then train in step.

TensorFlow requires the strategy before anything initialises its runtime, so
`prepare()` runs before the device smoke test: a group never falls back to the
CPU inside one process (that would make a mix); it exits 75 and the operator (or
the `gpubatch run` supervisor) moves the whole group.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from gpubatch_jobs.contract import ENV_COMPLETION_INDEX, ENV_WORKER_HOSTS
from gpubatch_jobs.errors import BadInput

log = logging.getLogger("gpubatch.train")


@dataclass
class WorkerGroup:
    """This process's place in a multi-worker TrainJob."""

    index: int
    hosts: list[str]
    backend: str = "tensorflow"
    strategy: Any = field(default=None, repr=False)
    _agree: Any = field(default=None, repr=False)

    @property
    def stops_at_a_step(self) -> bool:
        """Whether the group can agree on a step to stop at on SIGTERM (TensorFlow's collectives)."""
        return self.backend == "tensorflow"

    def agree_to_stop(self, mine: bool) -> bool:
        """Whether any worker of the group was told to stop (SIGTERM).

        One all-reduce of a 0/1 flag over the group's collectives: every worker
        calls it at the same step (the training loop's agreement points), so
        all of them stop after the same step and worker 0's checkpoint holds
        what every worker trained.
        """
        if not self.stops_at_a_step or self.strategy is None:
            return mine
        import tensorflow as tf

        if self._agree is None:
            strategy = self.strategy

            @tf.function  # type: ignore[misc]
            def agree(flag: Any) -> Any:
                def replica(value: Any) -> Any:
                    # identity: a tensor placed on this replica's device (the argument has none)
                    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                                          tf.identity(value))

                return strategy.run(replica, args=(flag,))

            self._agree = agree
        result = self._agree(tf.constant(1.0 if mine else 0.0))
        return bool(float(self.strategy.experimental_local_results(result)[0]) > 0)

    @property
    def count(self) -> int:
        return len(self.hosts)

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @classmethod
    def from_env(cls, spec: Any, env: dict[str, str] | None = None) -> WorkerGroup | None:
        """The group this process belongs to, or None for a one-worker TrainJob."""
        env = dict(os.environ if env is None else env)
        workers = int(getattr(spec, "workers", 1) or 1)
        hosts_text = env.get(ENV_WORKER_HOSTS, "").strip()
        if workers <= 1:
            return None
        if not hosts_text:
            raise BadInput(
                f"spec.workers is {workers}, but {ENV_WORKER_HOSTS} (every worker's host:port) is not set: "
                "run it with `gpubatch run --workers N` or as a TrainJob on the cluster",
                field="spec.workers",
            )
        hosts = [h.strip() for h in hosts_text.split(",") if h.strip()]
        if len(hosts) != workers:
            raise BadInput(f"{ENV_WORKER_HOSTS} names {len(hosts)} workers but spec.workers is {workers}",
                           field="spec.workers")
        try:
            index = int(env.get(ENV_COMPLETION_INDEX, ""))
        except ValueError:
            raise BadInput(f"{ENV_COMPLETION_INDEX} (this worker's index) is not set or not a number",
                           field="spec.workers") from None
        if not 0 <= index < workers:
            raise BadInput(f"{ENV_COMPLETION_INDEX}={index} is outside 0..{workers - 1}", field="spec.workers")
        if spec.backend not in ("tensorflow", "jax"):
            raise BadInput("workers > 1 needs backend tensorflow or jax", field="spec.backend")
        return cls(index=index, hosts=hosts, backend=spec.backend)

    # -- set-up, before the framework runs anything ---------------------------------------
    def tf_config(self) -> dict[str, Any]:
        return {"cluster": {"worker": list(self.hosts)}, "task": {"type": "worker", "index": self.index}}

    def prepare(self, gpu: bool) -> None:
        """Join the group: create the framework's distributed runtime (before any op runs)."""
        if self.backend == "tensorflow":
            self._prepare_tensorflow(gpu)
        else:
            self._prepare_jax(gpu)
        log.info("worker %d of %d joined (%s)", self.index, self.count, self.backend)

    def _prepare_tensorflow(self, gpu: bool) -> None:
        os.environ["TF_CONFIG"] = json.dumps(self.tf_config())
        import tensorflow as tf

        from gpubatch_jobs.devices.frameworks import GPU_PROBES

        GPU_PROBES["tensorflow"].setup(gpu)  # memory growth on a GPU, the GPU hidden on a CPU run
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _patch_keras_tf_multiworker()

    def _prepare_jax(self, gpu: bool) -> None:
        import jax

        if not gpu:
            jax.config.update("jax_platforms", "cpu")
            # CPU collectives across processes (all-reduce of the gradients) go through gloo.
            with contextlib.suppress(Exception):
                jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=self.hosts[0], num_processes=self.count,
                                   process_id=self.index)

    # -- training ----------------------------------------------------------------------------
    def scope(self) -> Any:
        """Where the model must be built and compiled."""
        if self.backend == "tensorflow" and self.strategy is not None:
            return self.strategy.scope()
        if self.backend == "jax":
            import keras

            distribution = keras.distribution.DataParallel()
            distribution.auto_shard_dataset = False  # fit_data gives each process its own rows
            keras.distribution.set_distribution(distribution)
        return contextlib.nullcontext()

    def fit_data(self, x: Any, y: Any, w: Any, global_batch: int) -> tuple[Any, Any, Any, int]:
        """(x, y, weights, batch size) this process passes to `fit`.

        TensorFlow takes the whole data and the global batch and splits each batch
        itself. Keras' JAX DataParallel takes each process's share: worker i feeds
        rows i, i+N, ... with batch global/N, so a global batch holds the same rows
        as one worker's batch would (in another order).
        """
        if self.backend == "tensorflow":
            return x, y, w, global_batch
        part = slice(self.index, None, self.count)
        return x[part], y[part], (None if w is None else w[part]), global_batch // self.count

    def as_dict(self, global_batch: int) -> dict[str, Any]:
        return {"total": self.count, "index": self.index, "perWorkerBatchSize": global_batch // self.count,
                "globalBatchSize": global_batch, "engine": self.engine}

    @property
    def engine(self) -> str:
        return "tf.distribute.MultiWorkerMirroredStrategy" if self.backend == "tensorflow" \
            else "jax.distributed + keras.distribution.DataParallel"


_PATCHED = False


def _patch_keras_tf_multiworker() -> None:
    """Two Keras 3 bugs with MultiWorkerMirroredStrategy, fixed where they are.

    Keras (3.15) reduces the first distributed batch across workers only to learn
    its shapes (`_maybe_symbolic_build`, which fails: collective reduce of a
    PerReplica of numpy arrays), and averages scalar logs with
    `strategy.reduce("MEAN", v, axis=0)`, which fails on a 0-d tensor. One
    worker's local batch has the shapes needed; a scalar is reduced with axis=None.
    """
    global _PATCHED
    if _PATCHED:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if tf_trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
            def one(v: Any) -> Any:
                if not tf_trainer._is_per_replica_instance(v):
                    return v
                scalar = v.values[0].shape.rank == 0
                return strategy.reduce("MEAN", v, axis=None if scalar else 0)

            return tree.map_structure(one, values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> Any:
        if self._distribute_strategy is None:
            return None
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda v: self.distribute_strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, batch)
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)
        return None

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build  # type: ignore[method-assign]
    _PATCHED = True


__all__ = ["WorkerGroup"]
