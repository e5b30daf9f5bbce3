"""The images install what the code needs, from exact pins that still resolve.

Fast checks read the files: every requirement is an exact pin, the files cover
the pyproject extras each image serves, the Dockerfiles copy what exists and
run as a non-root user. The slow checks ask the package index (pip dry runs
for CPython 3.11 and 3.12 on linux x86_64) and run images/smoke.sh here, the
same script the images run, on the engine installed in this environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!-]*)$")
# Packages published only as source: pip cannot resolve them for another
# platform, so they are checked by name and version instead.
SOURCE_ONLY = {"pyspark"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PYTHONS = ("3.11", "3.12")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(name: str) -> dict[str, str]:
    """{package: version} of a requirements file, following `-r` includes."""
    out: dict[str, str] = {}
    for raw in (IMAGES / name).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            out.update(pins(line[3:].strip()))
            continue
        match = PIN.match(line)
        assert match, f"images/{name}: {raw!r} is not an exact pin (name==version)"
        out[canonical(match.group(1))] = match.group(2)
    return out


def requirement_names(requirements: list[str]) -> set[str]:
    return {canonical(re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0]) for req in requirements}


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PYPROJECT["optional-dependencies"]
CORE = requirement_names(PYPROJECT["dependencies"])
IMAGE_FILES = ("requirements-operator.txt", "requirements-cpu.txt", "requirements-gpu.txt")


@pytest.mark.parametrize("name", IMAGE_FILES)
def test_every_requirement_is_an_exact_pin(name: str) -> None:
    assert pins(name)


@pytest.mark.parametrize(("name", "extras"), [
    ("requirements-operator.txt", ("operator",)),
    ("requirements-cpu.txt", ("render", "train", "spark")),
    ("requirements-gpu.txt", ("render", "train", "spark", "gpu")),
])
def test_images_install_what_their_extras_need(name: str, extras: tuple[str, ...]) -> None:
    pinned = set(pins(name))
    # The CPU image's TensorFlow is the CPU-only build of the same release.
    if "tensorflow-cpu" in pinned:
        pinned.add("tensorflow")
    needed = CORE.union(*(requirement_names(EXTRAS[extra]) for extra in extras))
    assert not needed - pinned, f"images/{name} lacks {sorted(needed - pinned)}"


def test_the_operator_image_has_no_ml_library() -> None:
    heavy = {"tensorflow", "tensorflow-cpu", "numpy", "cupy-cuda12x", "pyspark", "matplotlib", "torch", "jax"}
    assert not heavy & set(pins("requirements-operator.txt"))


def test_shared_packages_have_one_version_everywhere() -> None:
    seen: dict[str, dict[str, str]] = {}
    for name in IMAGE_FILES:
        for package, version in pins(name).items():
            seen.setdefault(package, {})[name] = version
    split = {package: files for package, files in seen.items() if len(set(files.values())) > 1}
    assert not split, split


def test_cpu_and_gpu_tensorflow_are_the_same_release() -> None:
    assert pins("requirements-cpu.txt")["tensorflow-cpu"] == pins("requirements-gpu.txt")["tensorflow"]


def dockerfile_stages(path: Path) -> dict[str, list[str]]:
    """{stage name: its instructions (continuation lines joined)}."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            name = line.split()[-1] if " AS " in line.upper() else f"stage{len(stages)}"
            current = stages.setdefault(name, [])
        current.append(line)
    return stages


@pytest.mark.parametrize(("dockerfile", "requirements"), [
    ("Dockerfile.cpu", "requirements-cpu.txt"), ("Dockerfile.gpu", "requirements-gpu.txt"),
])
def test_job_images_run_the_entrypoint_as_user_1000(dockerfile: str, requirements: str) -> None:
    stages = dockerfile_stages(ROOT / dockerfile)
    job = stages[list(stages)[-1]]  # the default target is the last stage
    assert 'ENTRYPOINT ["gpubatch-job"]' in job
    assert "USER 1000:1000" in job
    assert any(requirements in line and line.startswith("COPY") for line in job)
    assert any("openjdk-17-jre-headless" in line for line in job), "Spark needs Java 17"
    for line in (line for stage in stages.values() for line in stage if line.startswith("COPY ")):
        if "--from=" in line:
            continue
        for source in line.split()[1:-1]:
            if source == SPARK_JARS_CONTEXT:  # made by images/build.sh (images/spark-jars.sh --into)
                continue
            matches = list(ROOT.glob(source))
            assert matches or source.endswith("*"), f"{dockerfile}: {line!r}: {source} does not exist"


SPARK_JARS_CONTEXT = "images/spark-jars/jars/"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_job_images_put_the_s3a_jars_where_the_engine_finds_them(dockerfile: str) -> None:
    job = dockerfile_stages(ROOT / dockerfile)["job"]
    copy = next(line for line in job if line.startswith(f"COPY {SPARK_JARS_CONTEXT} "))
    target = copy.split()[-1].rstrip("/")
    assert f"ENV GPUBATCH_SPARK_JARS={target}" in job
    # after the requirements (the slow layer stays cached), before the wheel (which changes most)
    assert job.index(copy) > next(i for i, line in enumerate(job) if line.startswith("RUN pip install -r"))
    assert job.index(copy) < next(i for i, line in enumerate(job) if "--from=wheel" in line)
    assert re.search(r"spark-jars\.sh\"? --into", (IMAGES / "build.sh").read_text())


def test_s3a_jars_match_the_hadoop_pyspark_ships() -> None:
    """hadoop-aws must be the release of PySpark's own Hadoop client, and the AWS SDK modules one version."""
    import pyspark

    shipped = [p.name for p in (Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar")]
    assert len(shipped) == 1, shipped
    hadoop = shipped[0].removeprefix("hadoop-client-api-").removesuffix(".jar")
    sums = (IMAGES / "spark-jars" / "SHA256SUMS").read_text().split("\n")
    jars = {line.split()[1]: line.split()[0] for line in sums if line.strip()}
    assert f"hadoop-aws-{hadoop}.jar" in jars, sorted(jars)
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in jars.values())
    sdk = {name.rsplit("-", 1)[1] for name in jars if name.startswith(("s3-2", "sdk-core-", "aws-core-"))}
    assert len(sdk) == 1, sdk
    # not the whole SDK bundle, and nothing PySpark already has (two versions on one class path)
    assert not [name for name in jars if name.startswith(("bundle-", "netty-", "httpclient-", "slf4j-"))
                and not name.startswith("netty-nio-client-")]


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_image_inputs_are_what_the_images_copy_and_not_the_docs(dockerfile: str) -> None:
    """images/build.sh rebuilds an image when a hashed input changes: each path a Dockerfile
    COPYs from the context is let through .dockerignore and hashed, and README.md is neither
    (a change to the docs rebuilding the 8.5 GB GPU image and reloading it cost a warm CI run
    some 6 min)."""
    build = (IMAGES / "build.sh").read_text()
    hashed = re.search(r"git ls-files -co --exclude-standard -- ([^|]+)\|", build)
    assert hashed, "images/build.sh: context_files' git ls-files line not found"
    inputs = set(hashed.group(1).split())
    allowed = {line[1:].strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    copied = set()
    for line in (ROOT / dockerfile).read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from=") for w in words):
            copied.update(w.rstrip("*").split("/")[0] for w in words[1:-1] if not w.startswith("--"))
    assert copied and copied <= inputs, f"{dockerfile} copies {sorted(copied - inputs)}, which build.sh does not hash"
    assert copied <= allowed, f"{dockerfile} copies {sorted(copied - allowed)}, which .dockerignore keeps out"
    assert "README.md" not in inputs | allowed | copied


def test_the_operator_target_is_slim() -> None:
    stages = dockerfile_stages(ROOT / "Dockerfile.cpu")
    operator = stages["operator"]
    assert 'ENTRYPOINT ["gpubatch-operator"]' in operator and "USER 1000:1000" in operator
    assert not any("requirements-cpu" in line or "openjdk" in line for line in operator)


def test_gpu_image_takes_cuda_and_cudnn_from_wheels() -> None:
    """No CUDA base image: any Python base, CUDA 12 and cuDNN 9 from NVIDIA's wheels."""
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert "nvidia/cuda" not in text
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        base = re.search(r"^ARG BASE_IMAGE=(\S+)", (ROOT / dockerfile).read_text(), re.M)
        assert base and base.group(1) == "python:3.11-slim-bookworm", dockerfile
    gpu = pins("requirements-gpu.txt")
    for library in ("nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-nvrtc-cu12"):
        assert library in gpu, f"images/requirements-gpu.txt lacks {library}"
    assert gpu["nvidia-cudnn-cu12"].startswith("9."), "TensorFlow 2.21 needs cuDNN 9"


# --- slow: the package index and the smoke script ----------------------------------------------


def pip(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def package_index() -> None:
    """Skip (with the reason printed) when the package index cannot be reached."""
    probe = pip("index", "versions", "pip", "--disable-pip-version-check", timeout=60)
    if probe.returncode != 0:
        reason = f"package index unreachable: {probe.stderr.strip().splitlines()[-1:]}"
        print(reason)
        pytest.skip(reason)


@pytest.mark.slow
@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("name", IMAGE_FILES)
def test_requirements_resolve_for_linux_x86_64(package_index: None, name: str, python: str,
                                                tmp_path: Path) -> None:
    binary = {package: version for package, version in pins(name).items() if package not in SOURCE_ONLY}
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(f"{package}=={version}\n" for package, version in binary.items()))
    report = tmp_path / "report.json"
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    result = pip("install", "--dry-run", "--ignore-installed", "--quiet", "--disable-pip-version-check",
                 "--only-binary=:all:", *platforms, "--python-version", python, "--implementation", "cp",
                 "--target", str(tmp_path / "target"), "--report", str(report), "-r", str(requirements))
    assert result.returncode == 0, f"images/{name} does not resolve for CPython {python}:\n{result.stderr}"
    resolved = {canonical(item["metadata"]["name"]): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    for package, version in binary.items():
        assert resolved.get(package) == version, (package, version, resolved.get(package))


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGE_FILES)
def test_source_only_pins_exist(package_index: None, name: str) -> None:
    for package, version in pins(name).items():
        if package in SOURCE_ONLY:
            result = pip("index", "versions", package, "--disable-pip-version-check", timeout=120)
            assert result.returncode == 0, result.stderr
            listed = result.stdout.split("Available versions:", 1)[-1]
            assert version in [v.strip() for v in listed.split(",")], f"{package}=={version} is not published"


@pytest.mark.slow
def test_smoke_script_passes_with_the_installed_engine(tmp_path: Path) -> None:
    """images/smoke.sh on this machine: `gpubatch doctor`, then a job of each kind, on the CPU."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "gpubatch").exists() or shutil.which("java") is None:
        pytest.skip(f"needs the gpubatch console script in {bin_dir} and java on PATH")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable,
           "SMOKE_WORKDIR": str(tmp_path), "GPUBATCH_DEVICE": "cpu"}
    result = subprocess.run(["bash", str(IMAGES / "smoke.sh")], capture_output=True, text=True, env=env,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for manifest in ("01-render.yaml", "02-train.yaml", "03-predict.yaml"):
        assert f"smoke: {manifest} ok on cpu" in result.stdout
    assert (tmp_path / "out" / "predictions.parquet").exists()
    # --require-gpu fails where no GPU is (exit 75 from the doctor, before any job).
    if shutil.which("nvidia-smi") is None:
        env.pop("GPUBATCH_DEVICE")
        no_gpu = subprocess.run(["bash", str(IMAGES / "smoke.sh"), "--require-gpu"], capture_output=True,
                                text=True, env={**env, "SMOKE_WORKDIR": str(tmp_path / "gpu")}, timeout=300,
                                check=False)
        assert no_gpu.returncode == 75, no_gpu.stdout[-2000:] + no_gpu.stderr[-2000:]
        assert "== gpubatch run" not in no_gpu.stdout
