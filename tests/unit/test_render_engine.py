"""The RenderJob engine end to end: output layout, resume, atomicity, shards, fallbacks, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from gpubatch_jobs.errors import BadInput, GpuUnusable
from gpubatch_jobs.render import engine
from gpubatch_jobs.render import gpu as gpu_module
from gpubatch_jobs.render.cpu import render_batch
from gpubatch_jobs.render.geometry import RenderParams
from gpubatch_jobs.render.reference import MatplotlibRenderer
from gpubatch_jobs.spec.kinds import RenderJobSpec
from tests.unit.local import run_context

N_POINTS = 700
SEQ_LEN = 20


def make_spec(**fields: Any) -> RenderJobSpec:
    base: dict[str, Any] = {
        "input": {"path": "data/series.h5", "dataset": "close", "labels": "up"},
        "output": {"path": "out/charts.h5"},
        "seqLen": SEQ_LEN, "stride": 1, "width": 32, "height": 24, "batchSize": 64,
        "device": {"policy": "cpu"}, "previewImages": 9,
    }
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return RenderJobSpec.model_validate(base)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    close = 50 + np.cumsum(rng.standard_normal(N_POINTS))
    close[100] = np.nan  # windows 81..100 are skipped
    (tmp_path / "data").mkdir()
    with h5py.File(tmp_path / "data" / "series.h5", "w") as f:
        f["close"] = close
        f["up"] = np.r_[(np.diff(close) > 0), False].astype(np.int8)
    return tmp_path


def render(spec: Any, folder: Path, **fields: Any) -> dict[str, Any]:
    """engine.run as `gpubatch run` calls it: the spec's policy turned into the instruction."""
    return engine.run(spec, run_context(spec, base_dir=folder, progress_interval_s=0.0, **fields))


def expected_images(folder: Path, valid: np.ndarray) -> np.ndarray:
    with h5py.File(folder / "data" / "series.h5", "r") as f:
        close = f["close"][()]
    windows = np.stack([close[s: s + SEQ_LEN] for s in valid]).astype(np.float32)
    return render_batch(windows, RenderParams(SEQ_LEN, 32, 24, 1.5))


VALID = np.array([s for s in range(N_POINTS - SEQ_LEN + 1) if not 81 <= s <= 100])


def test_output_holds_images_labels_index_and_parameters(workdir: Path) -> None:
    summary = render(make_spec(), workdir)
    assert summary["ok"] and summary["device"] == "cpu" and summary["batchSize"] == 64
    assert summary["images"] == len(VALID) and summary["skipped"] == {"nonFinite": 20}
    assert summary["imagesPerSecond"] > 0 and summary["fallbacks"] == []
    with h5py.File(workdir / "out" / "charts.h5", "r") as f:
        images = f["images"]
        assert images.shape == (len(VALID), 24, 32) and images.dtype == np.uint8
        assert images.chunks is not None and images.chunks[1:] == (24, 32)
        assert f["index"][()].tolist() == VALID.tolist()
        with h5py.File(workdir / "data" / "series.h5", "r") as src:
            assert f["labels"][()].tolist() == src["up"][()][VALID + SEQ_LEN - 1].tolist()
        assert f.attrs["seqLen"] == SEQ_LEN and f.attrs["lineWidth"] == 1.5 and f.attrs["complete"]
        assert np.array_equal(images[()], expected_images(workdir, VALID))
    assert Path(summary["preview"]).is_file()
    assert [p.name for p in (workdir / "out").iterdir() if p.name.startswith(".")] == []


def test_rendered_file_matches_matplotlib_read_back(workdir: Path) -> None:
    render(make_spec(width=96, height=64, output={"path": "out/big.h5"}), workdir)
    params = RenderParams(SEQ_LEN, 96, 64, 1.5)
    with h5py.File(workdir / "out" / "big.h5", "r") as f, h5py.File(workdir / "data" / "series.h5", "r") as src:
        starts, images = f["index"][:50], f["images"][:50]
        windows = np.stack([src["close"][s: s + SEQ_LEN] for s in starts])
    reference = MatplotlibRenderer(params).render_batch(windows)
    from tests.ink import ink_iou

    assert min(ink_iou(a, b) for a, b in zip(images, reference, strict=True)) >= 0.9


class Interrupt(BaseException):
    """Stands for the process being stopped: not an Exception, so nothing may swallow it."""


def interrupt_after(images: int):  # type: ignore[no-untyped-def]
    def sink(event: dict[str, Any]) -> None:
        if event["done"] >= images:
            raise Interrupt()

    return sink


def test_interrupted_run_resumes_to_exactly_the_clean_result(workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    final = workdir / "out" / "charts.h5"
    with pytest.raises(Interrupt):
        render(make_spec(), workdir, progress_sinks=[interrupt_after(200)])
    assert not final.exists()
    partial = workdir / "out" / ".charts.h5.partial"
    with h5py.File(partial, "r") as f:
        assert 200 <= f.attrs["done"] < len(VALID)
    summary = render(make_spec(), workdir)
    assert 200 <= summary["resumedFrom"] < len(VALID)
    assert summary["rendered"] == len(VALID) - summary["resumedFrom"]
    assert not partial.exists()
    with h5py.File(final, "r") as f:
        index, images = f["index"][()], f["images"][()]
    assert len(np.unique(index)) == len(index) == len(VALID)
    assert np.array_equal(images, expected_images(workdir, VALID))


def test_killed_process_resumes_to_exactly_n_images(workdir: Path) -> None:
    """A real SIGKILL part-way (no cleanup at all), then a second run."""
    spec = make_spec(width=200, height=150, batchSize=16, output={"path": "out/killed.h5"})
    script = (
        "import json,os,signal,sys\n"
        "from gpubatch_jobs.render import engine\n"
        "from gpubatch_jobs.contract import DeviceInstruction\n"
        "from gpubatch_jobs.runtime import RunContext\n"
        "from gpubatch_jobs.spec.kinds import RenderJobSpec\n"
        "spec = RenderJobSpec.model_validate(json.loads(sys.argv[1]))\n"
        "def sink(event):\n"
        "    if event['done'] >= 64: os.kill(os.getpid(), signal.SIGKILL)\n"
        "engine.run(spec, RunContext(base_dir=sys.argv[2], progress_interval_s=0.0, progress_sinks=[sink],\n"
        "                            instruction=DeviceInstruction('cpu')))\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, json.dumps(spec.wire()), str(workdir)], timeout=300)
    assert killed.returncode == -9
    assert not (workdir / "out" / "killed.h5").exists()
    summary = render(spec, workdir)
    assert summary["resumedFrom"] >= 64
    with h5py.File(workdir / "out" / "killed.h5", "r") as f:
        assert f["index"][()].tolist() == VALID.tolist()
        fresh = render_batch(np.stack([h5py.File(workdir / "data" / "series.h5")["close"][s: s + SEQ_LEN]
                                       for s in VALID[:80]]).astype(np.float32), RenderParams(SEQ_LEN, 200, 150, 1.5))
        assert np.array_equal(f["images"][:80], fresh)


def test_partial_from_another_spec_is_discarded(workdir: Path) -> None:
    with pytest.raises(Interrupt):
        render(make_spec(), workdir, progress_sinks=[interrupt_after(100)])
    summary = render(make_spec(lineWidth=2.5), workdir)
    assert summary["resumedFrom"] == 0 and summary["rendered"] == len(VALID)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"input": {"dataset": "nope"}}, "spec.input.dataset"),
        ({"seqLen": 5000}, "spec.seqLen"),
        ({"output": {"path": "data/series.h5/inside.h5"}}, "spec.output.path"),
    ],
)
def test_bad_input_leaves_nothing_under_the_output_name(workdir: Path, change: dict[str, Any], field: str) -> None:
    with pytest.raises(BadInput, match=field.replace(".", r"\.")):
        render(make_spec(**change), workdir)
    assert not (workdir / "out" / "charts.h5").exists()


def test_all_sequences_non_finite_is_an_error(workdir: Path) -> None:
    with h5py.File(workdir / "data" / "nan.h5", "w") as f:
        f["close"] = np.full(50, np.nan)
    with pytest.raises(BadInput, match="nothing to render"):
        render(make_spec(input={"path": "data/nan.h5", "labels": None}), workdir)
    assert not (workdir / "out" / "charts.h5").exists()


def test_unwritable_output_folder_is_bad_input(workdir: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = workdir / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(BadInput, match="not writable"):
        render(make_spec(output={"path": "locked/x.h5"}), workdir)


def test_existing_output_is_kept_unless_overwrite(workdir: Path) -> None:
    render(make_spec(), workdir)
    again = render(make_spec(), workdir)
    assert again["alreadyComplete"] and again["rendered"] == 0
    with pytest.raises(BadInput, match="spec.output.overwrite"):
        render(make_spec(lineWidth=2.0), workdir)
    replaced = render(make_spec(lineWidth=2.0, output={"overwrite": True}), workdir)
    assert replaced["rendered"] == len(VALID)


def test_shards_in_one_process_give_one_virtual_dataset(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = render(make_spec(shards=3), workdir)
    assert summary["assembled"] and len(summary["parts"]) == 3
    whole = render(make_spec(output={"path": "out/whole.h5"}), workdir)
    monkeypatch.chdir("/")  # sources are found next to the virtual file, not in the working directory
    with h5py.File(workdir / "out" / "charts.h5", "r") as vds, h5py.File(whole["output"], "r") as single:
        assert vds["images"].is_virtual
        assert np.array_equal(vds["images"][()], single["images"][()])
        assert np.array_equal(vds["labels"][()], single["labels"][()])
        assert np.array_equal(vds["index"][()], single["index"][()])


def test_shard_pods_render_their_part_and_the_last_assembles(workdir: Path) -> None:
    final = workdir / "out" / "charts.h5"
    results = [render(make_spec(shards=3), workdir, shard_index=i) for i in (2, 0, 1)]
    assert [r["assembled"] for r in results] == [False, False, True]
    assert results[0]["preview"] is None and results[1]["preview"] is not None
    assert sum(r["images"] for r in results) == len(VALID)
    with h5py.File(final, "r") as f:
        assert f["index"][()].tolist() == VALID.tolist()
    rerun = render(make_spec(shards=3), workdir, shard_index=1)
    assert rerun["alreadyComplete"] and rerun["assembled"]


def test_shard_index_out_of_range(workdir: Path) -> None:
    with pytest.raises(BadInput, match="spec.shards"):
        render(make_spec(shards=2), workdir, shard_index=2)


# --- device choice and fallbacks (the GPU is faked; the CPU work is real) ---


class FlakyGpuRenderer:
    """A stand-in for CupyRenderer: draws on the CPU, fails as told."""

    device, name, depth = "gpu", "cupy", 2
    fail_at_batch: int | None = None
    oom_above: int | None = None
    submitted: list[int] = []

    def __init__(self, params: RenderParams) -> None:
        self.params = params
        self.batches = 0

    def submit(self, seqs: np.ndarray) -> np.ndarray:
        type(self).submitted.append(len(seqs))
        if self.oom_above is not None and len(seqs) > self.oom_above:
            raise type("OutOfMemoryError", (Exception,), {})(f"out of memory allocating {len(seqs)} images")
        self.batches += 1
        if self.fail_at_batch is not None and self.batches > self.fail_at_batch:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return render_batch(seqs, self.params)

    def collect(self, handle: np.ndarray) -> np.ndarray:
        return handle

    def close(self) -> None:
        pass


@pytest.fixture
def flaky_gpu(monkeypatch: pytest.MonkeyPatch, fake_gpu: Any) -> type[FlakyGpuRenderer]:
    fake_gpu(smoke_ok=True)
    monkeypatch.setattr(engine, "setup_framework", lambda framework, choice: None)
    monkeypatch.setattr(gpu_module, "CupyRenderer", FlakyGpuRenderer)
    FlakyGpuRenderer.fail_at_batch = FlakyGpuRenderer.oom_above = None
    FlakyGpuRenderer.submitted = []
    return FlakyGpuRenderer


def test_gpu_error_mid_run_finishes_on_the_cpu(workdir: Path, flaky_gpu: type[FlakyGpuRenderer]) -> None:
    flaky_gpu.fail_at_batch = 3
    summary = render(make_spec(device={"policy": "auto"}), workdir)
    assert summary["device"] == "cpu" and len(summary["fallbacks"]) == 1
    assert summary["fallbacks"][0]["from"] == "gpu" and "illegal memory access" in summary["fallbacks"][0]["reason"]
    with h5py.File(workdir / "out" / "charts.h5", "r") as f:
        assert f["index"][()].tolist() == VALID.tolist()
        assert np.array_equal(f["images"][()], expected_images(workdir, VALID))


def test_gpu_error_without_fallback_exits_75(workdir: Path, flaky_gpu: type[FlakyGpuRenderer]) -> None:
    flaky_gpu.fail_at_batch = 1
    with pytest.raises(GpuUnusable, match="fallbackOnError"):
        render(make_spec(device={"policy": "gpu"}, fallbackOnError=False), workdir)
    assert not (workdir / "out" / "charts.h5").exists()


def test_gpu_out_of_memory_halves_the_batch_and_goes_on(workdir: Path, flaky_gpu: type[FlakyGpuRenderer]) -> None:
    flaky_gpu.oom_above = 20
    summary = render(make_spec(device={"policy": "gpu"}, batchSize=64), workdir)
    assert summary["device"] == "gpu" and summary["batchSize"] == 16 and summary["oomBackoffs"] == 2
    assert summary["batchSizeRequested"] == 64 and summary["fallbacks"] == []
    with h5py.File(workdir / "out" / "charts.h5", "r") as f:
        assert f["index"][()].tolist() == VALID.tolist()


def test_auto_batch_size_comes_from_free_gpu_memory(workdir: Path, flaky_gpu: type[FlakyGpuRenderer],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "gpu_memory", lambda: [(1 << 20, 80 << 30)])  # 1 MiB free
    summary = render(make_spec(device={"policy": "gpu"}, batchSize="auto"), workdir)
    params = RenderParams(SEQ_LEN, 32, 24, 1.5)
    assert summary["batchSize"] == gpu_module.auto_batch_size(params, 1 << 20) == 103  # 1 MiB / 4 / 3 slots / 848 B


def test_gpu_renderer_that_cannot_start_falls_back(workdir: Path, fake_gpu: Any) -> None:
    fake_gpu(smoke_ok=True)  # the probe says GPU, but CuPy is not importable here
    summary = render(make_spec(device={"policy": "auto"}), workdir)
    assert summary["device"] == "cpu"
    if summary["fallbacks"]:  # where CuPy is missing: recorded as a fallback at image 0
        assert summary["fallbacks"][0]["atImage"] == 0


def test_policy_gpu_without_a_gpu_is_gpu_unusable(workdir: Path, fake_gpu: Any) -> None:
    fake_gpu(smoke_ok=False)
    with pytest.raises(GpuUnusable):
        render(make_spec(device={"policy": "gpu"}), workdir)


def test_gpubatch_run_end_to_end(workdir: Path) -> None:
    manifest = workdir / "render.yaml"
    manifest.write_text(
        "apiVersion: gpubatch.dev/v1alpha1\nkind: RenderJob\nmetadata: {name: prices}\n"
        "spec:\n  input: {path: pvc://data/series.h5, dataset: close, labels: up}\n"
        "  output: {path: pvc://out/charts.h5}\n  seqLen: 20\n  width: 32\n  height: 24\n  shards: 2\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "gpubatch_jobs.cli", "run", str(manifest), "--device", "cpu",
         "--mount", f"data={workdir / 'data'}", "--mount", f"out={workdir / 'results'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["kind"] == "RenderJob" and summary["images"] == len(VALID)
    with h5py.File(workdir / "results" / "charts.h5", "r") as f:
        assert f["images"].shape == (len(VALID), 24, 32)

    bad = subprocess.run(
        [sys.executable, "-m", "gpubatch_jobs.cli", "run", str(manifest), "--device", "cpu", "--shard", "0/2",
         "--mount", f"data={workdir / 'nowhere'}", "--mount", f"out={workdir / 'results2'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode == 1 and "spec.input.path" in bad.stderr
    assert not (workdir / "results2" / "charts.h5").exists()
