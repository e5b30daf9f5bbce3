#!/usr/bin/env bash
# The test suite as `make test` runs it, in two phases, side by side:
#
#   1. tests that share nothing (tests/unit, tests/s3, tests/objstore, tests/gpu: each
#      test makes its own folders, ports and object-store servers) in parallel with pytest-xdist,
#      GPUBATCH_TEST_WORKERS processes (default: the number of CPUs, at most 4);
#      a module's tests stay on one worker (--dist loadscope), so a module-scoped
#      fixture (a trained model, a Spark session) is built once.
#   2. tests of the one test cluster (tests/cluster, tests/operator, tests/e2e), in two
#      streams, each one test at a time:
#        a. tests/cluster, tests/operator and the Kueue modules (tests/e2e/test_kueue.py,
#           test_preemption.py): the chart installed under its default name, the operator's
#           default ClusterRoles, one Kueue (its CRDs are cluster-wide) at a time;
#        b. every other tests/e2e module.
#      What the streams share is safe to share: each module has its own namespace, each
#      e2e module its own Helm release (the release's cluster-wide objects carry its name),
#      and a Kueue's webhooks and managed namespaces are limited to its test's namespace.
#
# The cluster is started in the background when the run starts (unless one is up
# already, or GPUBATCH_TEST_EARLY_CLUSTER=0) and stopped at the end. Phase 1
# starts at once; phase 2 when the cluster is up. Phase 2's pods mostly wait
# (pod starts, probes, Kueue, Spark's scheduling) where phase 1 keeps the CPUs
# busy: warm, on 2 cores, phase 1 alone took 666 s and phase 2 alone 1,408 s;
# side by side 721 s and 1,431 s (README: "CI on a new machine").
#
# Stream a's output is shown as it comes; phase 1's and stream b's are kept in
# files (named at the start, for `tail -f`) and printed when they end. Every
# part always runs; the script fails when one failed. Arguments are passed to
# every pytest run (`make test PYTEST_ARGS=...`).
#
#   tests/run.sh [PYTEST_ARGS...]
#   GPUBATCH_TEST_PHASES=parallel|serial   run one phase only
#   GPUBATCH_TEST_OVERLAP=0                phase 1 first, then phase 2
#   GPUBATCH_TEST_STREAMS=1                phase 2 as one stream
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
workers=${GPUBATCH_TEST_WORKERS:-$(nproc)}
((workers > 4)) && workers=4
phases=${GPUBATCH_TEST_PHASES:-parallel serial}
case $phases in
  "parallel serial" | parallel | serial) ;;
  *) echo "tests/run.sh: GPUBATCH_TEST_PHASES must be 'parallel', 'serial' or both, got '$phases'" >&2; exit 2 ;;
esac

status=0
started=$SECONDS
times=()
logs=()
background=() # session leaders of the pytest runs in the background, stopped with this script

cluster_log=$(mktemp)
cluster_pid=
own_cluster=false
cleanup() {
  local pid
  for pid in "${background[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
  [[ -z $cluster_pid ]] || wait "$cluster_pid" 2>/dev/null
  if $own_cluster; then bash tests/cluster/cluster.sh down >/dev/null 2>&1 || true; fi
  rm -f "$cluster_log" "${logs[@]}"
}
trap cleanup EXIT
if [[ $phases == *serial* && ${GPUBATCH_TEST_EARLY_CLUSTER:-1} == 1 ]] && ! bash tests/cluster/cluster.sh status; then
  echo "== starting the test cluster in the background (log: $cluster_log)"
  own_cluster=true
  bash tests/cluster/cluster.sh up >"$cluster_log" 2>&1 &
  cluster_pid=$!
fi

# 5: no test collected, which -k or -m may cause in one part; not a failure of the run.
record() { # NAME RC SECONDS
  (($2 == 0 || $2 == 5)) || status=1
  times+=("$1 $3 s (exit $2)")
}

# start_in_background NAME PYTEST_ARGS...: the run in its own session (stopped with its
# workers if this script is stopped), its output in a file; sets $bg_pid and $bg_log.
start_in_background() {
  local name=$1
  shift
  bg_log=$(mktemp)
  logs+=("$bg_log")
  echo "== $name: in the background (its output follows when it ends; meanwhile: tail -f $bg_log)"
  setsid "$py" -m pytest "$@" </dev/null >"$bg_log" 2>&1 &
  bg_pid=$!
  background+=("$bg_pid")
}

# finish_background NAME PID LOG START: wait for it, print its output, record it.
finish_background() {
  local rc
  wait "$2"
  rc=$?
  echo "== $1 (ran in the background): its output"
  cat "$3"
  record "$1" "$rc" $((SECONDS - $4))
}

phase1_args=(-n "$workers" --dist loadscope "$@" tests/unit tests/s3 tests/objstore tests/gpu)
phase1_name="phase 1 (tests/unit tests/s3 tests/objstore tests/gpu on $workers workers)"

wait_for_cluster() {
  [[ -n $cluster_pid ]] || return 0
  local t1=$SECONDS
  if wait "$cluster_pid"; then
    echo "== the test cluster is up (waited $((SECONDS - t1)) s for it)"
  else
    # pytest's fixture tries again and reports what failed.
    echo "== starting the test cluster in the background failed:"; tail -30 "$cluster_log"
  fi
  cluster_pid=
}

run_phase2() {
  local t0=$SECONDS stream_b=() module
  wait_for_cluster
  if [[ ${GPUBATCH_TEST_STREAMS:-2} == 1 ]]; then
    echo "== phase 2: tests/cluster tests/operator tests/e2e, one at a time"
    "$py" -m pytest "$@" tests/cluster tests/operator tests/e2e
    record "phase 2" $? $((SECONDS - t0))
    return
  fi
  local stream_a=(tests/cluster tests/operator tests/e2e/test_kueue.py tests/e2e/test_preemption.py)
  for module in tests/e2e/test_*.py; do
    [[ " ${stream_a[*]} " == *" $module "* ]] || stream_b+=("$module")
  done
  start_in_background "phase 2, stream b" "$@" "${stream_b[@]}"
  local b_pid=$bg_pid b_log=$bg_log
  echo "== phase 2, stream a: ${stream_a[*]}, one at a time"
  "$py" -m pytest "$@" "${stream_a[@]}"
  record "phase 2, stream a" $? $((SECONDS - t0))
  finish_background "phase 2, stream b (${stream_b[*]})" "$b_pid" "$b_log" "$t0"
}

if [[ $phases == "parallel serial" && ${GPUBATCH_TEST_OVERLAP:-1} == 1 ]]; then
  t0=$SECONDS
  start_in_background "$phase1_name" "${phase1_args[@]}"
  p1_pid=$bg_pid p1_log=$bg_log
  run_phase2 "$@"
  finish_background "$phase1_name" "$p1_pid" "$p1_log" "$t0"
else
  if [[ $phases == *parallel* ]]; then
    t0=$SECONDS
    echo "== $phase1_name"
    "$py" -m pytest "${phase1_args[@]}"
    record "phase 1" $? $((SECONDS - t0))
  fi
  [[ $phases != *serial* ]] || run_phase2 "$@"
fi
echo "== test times: ${times[*]}; total $((SECONDS - started)) s"
exit $status
