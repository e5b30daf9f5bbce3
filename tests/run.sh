#!/usr/bin/env bash
# The test suite as `make test` runs it, in two phases:
#
#   1. tests that share nothing (tests/unit, tests/s3, tests/objstore, tests/gpu: each
#      test makes its own folders, ports and object-store servers) in parallel with pytest-xdist,
#      GPUBATCH_TEST_WORKERS processes (default: the number of CPUs, at most 4);
#      a module's tests stay on one worker (--dist loadscope), so a module-scoped
#      fixture (a trained model, a Spark session) is built once.
#   2. tests of the one test cluster (tests/cluster, tests/operator, tests/e2e),
#      serial: they share its API server, its real node and the chart's CRDs.
#      The cluster is started in the background when phase 1 starts (unless one
#      is up already, or GPUBATCH_TEST_EARLY_CLUSTER=0) and stopped at the end.
#
# Both phases always run; the script fails when either failed. Arguments are
# passed to both pytest runs (`make test PYTEST_ARGS=...`).
#
#   tests/run.sh [PYTEST_ARGS...]
#   GPUBATCH_TEST_PHASES=parallel|serial   run one phase only
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
workers=${GPUBATCH_TEST_WORKERS:-$(nproc)}
((workers > 4)) && workers=4
phases=${GPUBATCH_TEST_PHASES:-parallel serial}

status=0
started=$SECONDS
times=()

# The cluster starts (control plane, real node, first image load: mostly
# waiting and disk) while phase 1 keeps the CPUs busy; phase 2 reuses it and
# this script stops it at the end. A cluster that was already up is left alone.
cluster_log=$(mktemp)
cluster_pid=
own_cluster=false
stop_cluster() {
  [[ -z $cluster_pid ]] || wait "$cluster_pid" 2>/dev/null
  if $own_cluster; then bash tests/cluster/cluster.sh down >/dev/null 2>&1 || true; fi
  rm -f "$cluster_log"
}
trap stop_cluster EXIT
if [[ $phases == *serial* && ${GPUBATCH_TEST_EARLY_CLUSTER:-1} == 1 ]] && ! bash tests/cluster/cluster.sh status; then
  echo "== starting the test cluster in the background (log: $cluster_log)"
  own_cluster=true
  bash tests/cluster/cluster.sh up >"$cluster_log" 2>&1 &
  cluster_pid=$!
fi

for phase in $phases; do
  t0=$SECONDS
  case $phase in
    parallel)
      echo "== tests, phase 1: tests/unit tests/s3 tests/objstore tests/gpu on $workers workers"
      "$py" -m pytest -n "$workers" --dist loadscope "$@" tests/unit tests/s3 tests/objstore tests/gpu
      ;;
    serial)
      if [[ -n $cluster_pid ]]; then
        t1=$SECONDS
        if wait "$cluster_pid"; then
          echo "== the test cluster is up (waited $((SECONDS - t1)) s for it after phase 1)"
        else
          # pytest's fixture tries again and reports what failed.
          echo "== starting the test cluster in the background failed:"; tail -30 "$cluster_log"
        fi
        cluster_pid=
      fi
      echo "== tests, phase 2: tests/cluster tests/operator tests/e2e, one at a time"
      "$py" -m pytest "$@" tests/cluster tests/operator tests/e2e
      ;;
    *) echo "tests/run.sh: unknown phase '$phase' (parallel, serial)" >&2; exit 2 ;;
  esac
  rc=$?
  # 5: no test collected, which -k or -m may cause in one phase; not a failure of the run.
  ((rc == 0 || rc == 5)) || status=1
  times+=("$phase $((SECONDS - t0)) s (exit $rc)")
done
echo "== test phases: ${times[*]}; total $((SECONDS - started)) s"
exit $status
