#!/usr/bin/env bash
# The test suite as `make test` runs it, in two phases:
#
#   1. tests that share nothing (tests/unit, tests/s3, tests/gpu: each test makes
#      its own folders, ports and S3 server) in parallel with pytest-xdist,
#      GPUBATCH_TEST_WORKERS processes (default: the number of CPUs, at most 4);
#      a module's tests stay on one worker (--dist loadscope), so a module-scoped
#      fixture (a trained model, a Spark session) is built once.
#   2. tests of the one test cluster (tests/cluster, tests/operator, tests/e2e),
#      serial: they share its API server, its real node and the chart's CRDs.
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
for phase in $phases; do
  t0=$SECONDS
  case $phase in
    parallel)
      echo "== tests, phase 1: tests/unit tests/s3 tests/gpu on $workers workers"
      "$py" -m pytest -n "$workers" --dist loadscope "$@" tests/unit tests/s3 tests/gpu
      ;;
    serial)
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
