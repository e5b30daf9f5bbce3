"""`gpubatch doctor`: the GPU readiness check users run first.

It reports what the driver shows (GPUs, memory, driver and CUDA versions),
then, for each framework, whether it is installed, sees a GPU, multiplies two
matrices correctly on it and takes one training step. Exit 0 when the
requested policy can be met; 75 when a GPU is required (`--require-gpu` or
policy gpu) and none is usable, with what is missing and how to fix it.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

from gpubatch_jobs.devices import cuda
from gpubatch_jobs.devices.frameworks import CPU, GPU_PROBES, FrameworkProbe
from gpubatch_jobs.devices.select import FIX_HINTS, requested_instruction, smoke_test
from gpubatch_jobs.errors import EXIT_GPU_UNUSABLE, EXIT_OK


def _attempt(fn: Any) -> dict[str, Any]:
    try:
        seconds = fn()
        return {"ok": True, "ms": round(seconds * 1000, 2)}
    except Exception as err:  # the doctor reports every failure, it never stops at one
        return {"ok": False, "error": f"{type(err).__name__}: {err}"[:300]}


def check_framework(framework_probe: FrameworkProbe, gpu_present: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"framework": framework_probe.name, "installed": framework_probe.installed(), "version": framework_probe.version()}
    if not row["installed"]:
        row["note"] = f"not installed (pip install {framework_probe.distributions[0]})"
        return row
    if not gpu_present:
        row["seesGpu"] = False
        row["note"] = "no GPU visible to the driver"
        return row
    try:
        row["build"] = framework_probe.build_info()
    except Exception as err:  # build info is informative only
        row["build"] = {"error": str(err)[:200]}
    try:
        smoke_test.__wrapped__(framework_probe.name)  # uncached: the doctor always measures afresh
        row["seesGpu"] = True
        row["matmul"] = _attempt(framework_probe.smoke)
        row["trainStep"] = _attempt(framework_probe.train_step)
    except Exception as err:
        row["seesGpu"] = False
        row["error"] = f"{type(err).__name__}: {err}"[:300]
    return row


def diagnose(policy: str | None = None) -> dict[str, Any]:
    """Everything the doctor knows, as one JSON-ready dict."""
    probe = cuda.probe()
    frameworks = [check_framework(b, bool(probe.gpus)) for b in GPU_PROBES.values()]
    usable = [f["framework"] for f in frameworks if f.get("matmul", {}).get("ok") and f.get("trainStep", {}).get("ok")]
    cpu = {"framework": "cpu", "installed": True, "version": CPU.version(),
           "matmul": _attempt(CPU.smoke), "trainStep": _attempt(CPU.train_step)}
    wanted = requested_instruction(policy)
    problems = []
    if not probe.gpus:
        problems.append(probe.error or "no NVIDIA GPU visible")
    elif not usable:
        problems.append("a GPU is visible but no installed framework could compute on it")
    return {
        "host": platform.node(),
        "python": sys.version.split()[0],
        "policy": policy,  # --policy, when given
        "instruction": {"device": wanted.device, "onGpuFailure": wanted.on_gpu_failure},
        "gpuRequired": wanted.device == "gpu" and not wanted.fall_back_here,
        "cudaVisibleDevices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "driver": probe.as_dict(),
        "frameworks": frameworks + [cpu],
        "usableGpuFrameworks": usable,
        "gpuUsable": bool(usable),
        "device": "gpu" if usable and wanted.device == "gpu" else "cpu",
        "problems": problems,
        "fix": FIX_HINTS if problems else None,
    }


def _yes(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"ok {value['ms']} ms" if value.get("ok") else "FAIL"
    return "yes" if value else "no"


def _told(report: dict[str, Any]) -> str:
    told = report["instruction"]
    where = f"policy {report['policy']}" if report["policy"] else "instruction"
    return f"{where}: device {told['device']}, on GPU failure {told['onGpuFailure']}"


def format_report(report: dict[str, Any]) -> str:
    lines = [f"gpubatch doctor  (python {report['python']}, {_told(report)})", ""]
    driver = report["driver"]
    if driver["gpus"]:
        lines.append(f"Driver {driver['driverVersion']}  CUDA (driver) {driver['cudaDriverVersion']}  via {driver['source']}")
        lines.append(f"{'GPU':<4} {'name':<34} {'memory free/total':<20} {'cc':<5}")
        for gpu in driver["gpus"]:
            memory = f"{gpu['memory_free_bytes'] / 2**30:.1f}/{gpu['memory_total_bytes'] / 2**30:.1f} GiB"
            lines.append(f"{gpu['index']:<4} {gpu['name'][:34]:<34} {memory:<20} {gpu['compute_capability']:<5}")
    else:
        lines.append(f"GPUs: none ({driver['error'] or 'no NVIDIA GPU visible'})")
    lines.append("")
    lines.append(f"{'framework':<11} {'version':<12} {'CUDA':<7} {'cuDNN':<7} {'sees GPU':<9} {'matmul':<14} {'train step':<14}")
    for row in report["frameworks"]:
        build = row.get("build") or {}
        lines.append(
            f"{row['framework']:<11} {(row.get('version') or '-') if row['installed'] else 'missing':<12} "
            f"{str(build.get('cuda') or '-'):<7} {str(build.get('cudnn') or '-'):<7} "
            f"{_yes(row.get('seesGpu')) if row['framework'] != 'cpu' else 'n/a':<9} "
            f"{_yes(row.get('matmul')):<14} {_yes(row.get('trainStep')):<14}"
        )
        if row.get("error"):
            lines.append(f"    {row['framework']}: {row['error']}")
    lines.append("")
    if report["gpuUsable"]:
        lines.append(f"GPU usable with: {', '.join(report['usableGpuFrameworks'])}. Jobs run on: {report['device']}.")
    else:
        lines.append(f"No usable GPU: {'; '.join(report['problems'])}.")
        lines.append(f"Jobs run on: cpu ({_told(report)}).")
        lines.append(f"To use a GPU: {report['fix']}.")
    return "\n".join(lines)


def run_doctor(as_json: bool = False, require_gpu: bool = False, policy: str | None = None) -> int:
    try:
        report = diagnose(policy)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    need_gpu = require_gpu or report["gpuRequired"]
    code = EXIT_GPU_UNUSABLE if need_gpu and not report["gpuUsable"] else EXIT_OK
    report["exitCode"] = code
    print(json.dumps(report, indent=2) if as_json else format_report(report))
    if code == EXIT_GPU_UNUSABLE and not as_json:
        print("\nerror: a GPU is required but none is usable (exit 75)", file=sys.stderr)
    return code
