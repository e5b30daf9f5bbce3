"""The GPU kit (tests/gpu/kit.py) and the device script: checked here, without network or GPU.

The kit's rules are exercised on small wheel files made here (real zip files
with real METADATA); the project's own requirement list is checked against
the project's GPU-path imports; the downloaded kit, where `make gpu-kit` has
made one, is checked whole, and otherwise the pinned packages' requirements
are read from the development virtualenv's copies of the same versions.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.gpu import kit

DEVICE = {"numpy": "2.5.2", "typing-extensions": "4.12.2", "h5py": None, "packaging": None}
PINS = {"pydantic": "2.14.4", "pydantic-core": "2.50.5", "annotated-types": "0.8.0"}


def wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] | list[str] = (), *, size: int = 0,
          tags: str = "py3-none-any") -> Path:
    """A wheel file as pip downloads it, with its METADATA, padded to about `size` bytes."""
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-{tags}.whl"
    metadata = "\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                          *(f"Requires-Dist: {r}" for r in requires), "", "A description."])
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{dist}-{version}.dist-info/METADATA", metadata)
        archive.writestr(f"{dist}/payload.bin", b"\0" * size)
    return path


def pydantic_kit(folder: Path, payload: int = 0) -> Path:
    folder.mkdir(exist_ok=True)
    wheel(folder, "pydantic", "2.14.4", ["annotated-types>=0.6.0", "pydantic-core==2.50.5",
                                         "typing-extensions>=4.6", "email-validator>=2; extra == 'email'"],
          size=payload)
    wheel(folder, "pydantic-core", "2.50.5", ["typing-extensions>=4.6"],
          tags="cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64", size=payload)
    wheel(folder, "annotated-types", "0.8.0", ['typing-extensions>=4; python_version < "3.9"'])
    return folder


def problems(folder: Path, pins: dict[str, str] = PINS, device: dict[str, str | None] = DEVICE,
             limit: int = kit.LIMIT_BYTES) -> str:
    with pytest.raises(kit.KitError) as failed:
        kit.check(folder, pins, device, limit)
    return str(failed.value)


def test_a_whole_kit_passes_with_its_size(tmp_path: Path) -> None:
    folder = pydantic_kit(tmp_path / "kit", payload=100_000)
    found = kit.check(folder, PINS, DEVICE)
    assert [w.name for w in found.wheels] == ["annotated-types", "pydantic", "pydantic-core"]
    assert found.total_bytes == sum(p.stat().st_size for p in folder.iterdir()) > 200_000


def test_size_limit_is_inclusive_and_refuses_one_byte_over(tmp_path: Path) -> None:
    folder = pydantic_kit(tmp_path / "kit", payload=50_000)
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert kit.check(folder, PINS, DEVICE, limit=total).total_bytes == total
    assert "over its" in problems(folder, limit=total - 1)
    assert kit.LIMIT_BYTES == 60 * 2**20


def test_one_version_of_each(tmp_path: Path) -> None:
    folder = pydantic_kit(tmp_path / "kit")
    wheel(folder, "pydantic", "2.13.0", ["annotated-types>=0.6.0"])
    assert "pydantic: two wheels" in problems(folder)
    requirements = tmp_path / "req.txt"
    requirements.write_text("keras==3.15.1\nKeras==3.15.0\n")
    with pytest.raises(kit.KitError, match="keras is pinned twice"):
        kit.read_pins(requirements)
    requirements.write_text("keras>=3\n")
    with pytest.raises(kit.KitError, match="not NAME==VERSION"):
        kit.read_pins(requirements)


def test_missing_extra_and_wrong_version_wheels(tmp_path: Path) -> None:
    folder = pydantic_kit(tmp_path / "kit")
    (folder / "annotated_types-0.8.0-py3-none-any.whl").unlink()
    wheel(folder, "rich", "15.0.0")
    (folder / "notes.txt").write_text("left over")
    found = problems(folder, pins={**PINS, "pydantic-core": "2.50.4"})
    assert "annotated-types==0.8.0: pinned but not downloaded" in found
    assert "rich-15.0.0-py3-none-any.whl: not in kit-requirements.txt" in found
    assert "notes.txt: not a wheel" in found
    assert "pins pydantic-core==2.50.4" in found


def test_a_wheel_for_another_platform_is_refused(tmp_path: Path) -> None:
    folder = pydantic_kit(tmp_path / "kit")
    (folder / "pydantic_core-2.50.5-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl").unlink()
    wheel(folder, "pydantic-core", "2.50.5", ["typing-extensions>=4.6"], tags="cp311-cp311-win_amd64")
    assert "do not install on CPython 3.12 manylinux x86-64" in problems(folder)
    assert kit.platform_ok("manylinux_2_28_x86_64") and not kit.platform_ok("manylinux_2_40_x86_64")
    assert not kit.platform_ok("manylinux_2_17_aarch64") and kit.platform_ok("manylinux2014_x86_64")


def test_requirements_must_be_met_by_the_kit_and_the_device(tmp_path: Path) -> None:
    folder = pydantic_kit(tmp_path / "kit")
    wheel(folder, "keras", "3.15.1", ["numpy>=2.6", "optree", "h5py>=3", "absl-py; python_version < '3.0'"])
    found = problems(folder, pins={**PINS, "keras": "3.15.1"})
    assert "keras needs numpy>=2.6, the device has 2.5.2" in found
    assert "keras needs optree, which neither the device nor the kit has" in found
    assert "keras needs h5py>=3, and the device's h5py version is not recorded" in found
    assert "absl" not in found  # its marker is false on the device


def test_a_floor_is_carried_only_for_a_version_and_installed_only_if_older(tmp_path: Path) -> None:
    folder = pydantic_kit(tmp_path / "kit")
    wheel(folder, "numpy", "2.5.2")
    assert "numpy: the device has it and no kit package needs a version of it" in \
        problems(folder, pins={**PINS, "numpy": "2.5.2"})
    (folder / "numpy-2.5.2-py3-none-any.whl").unlink()
    unknown = {**DEVICE, "typing-extensions": None}  # as tests/gpu/device-packages.txt has it
    assert "pydantic needs typing-extensions>=4.6, and the device's typing-extensions version is not recorded" \
        in problems(folder, device=unknown)
    wheel(folder, "typing-extensions", "4.16.0")
    found = kit.check(folder, {**PINS, "typing-extensions": "4.16.0"}, unknown)
    assert found.floors == ["typing-extensions"]

    def installed(versions: dict[str, str]):  # type: ignore[no-untyped-def]
        return lambda name: versions.get(name)

    chosen = {p.name.split("-")[0] for p in kit.install_list(folder, installed({"typing-extensions": "4.6.0"}), unknown)}
    assert chosen == {"pydantic", "pydantic_core", "annotated_types"}
    chosen = {p.name.split("-")[0] for p in kit.install_list(folder, installed({"typing-extensions": "4.5.0"}), unknown)}
    assert "typing_extensions" in chosen
    assert "typing_extensions" in {p.name.split("-")[0] for p in kit.install_list(folder, installed({}), unknown)}


def test_the_project_kit_covers_its_gpu_path_imports() -> None:
    pins = kit.read_pins()
    device = kit.read_device()
    assert {"pydantic", "keras"} <= set(pins) and not set(kit.NOT_CARRIED) & set(pins)
    assert {"torch", "jax", "cupy-cuda13x", "h5py", "numba", "pyyaml"} <= set(device)
    imports = kit.gpu_path_imports()
    # the lazy imports inside functions count: that is where the frameworks are imported
    assert {"pydantic", "keras", "yaml", "cupy", "torch", "jax", "h5py", "numba"} <= set(imports)
    assert kit.uncovered_imports(pins, device, imports) == []
    # and the check can fail: without Keras in the kit, or with an import nobody provides
    found = kit.uncovered_imports({k: v for k, v in pins.items() if k != "keras"}, device, imports)
    assert len(found) == 1 and found[0].startswith("keras (distribution keras), imported by ")
    found = kit.uncovered_imports(pins, device, {**imports, "boto3": {"bench/x.py"}})
    assert found == [f"boto3 (distribution boto3), imported by bench/x.py: neither the device nor the kit has it; "
                     f"pin it in {kit.REQUIREMENTS.name} or explain in NOT_CARRIED why the GPU check does without it"]


def test_the_project_kit_requirements_are_met() -> None:
    """The downloaded kit whole where it exists; else the same versions' metadata from this virtualenv."""
    pins, device = kit.read_pins(), kit.read_device()
    if kit.DEFAULT_FOLDER.is_dir():
        found = kit.check(kit.DEFAULT_FOLDER, pins, device)
        assert found.total_bytes <= kit.LIMIT_BYTES and len(found.wheels) == len(pins)
        return
    requires = {}
    for name, version in pins.items():
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if dist.version == version:
            requires[name] = kit.on_device(dist.requires or [])
    if not requires:
        pytest.skip("no .gpu-kit (make gpu-kit) and this virtualenv has none of the pinned versions")
    found, floors = kit.requirement_problems(pins, requires, device)
    if len(requires) < len(pins):  # some versions differ here: a floor's reason may be among the missing
        found = [problem for problem in found if "no kit package needs a version of it" not in problem]
    else:
        assert "typing-extensions" in floors
    assert found == []


@pytest.mark.parametrize("script", ["on-device.sh", "kit.sh", "shape-venv.sh"])
def test_the_scripts_parse(script: str) -> None:
    path = Path(kit.HERE / script)
    done = subprocess.run([shutil.which("bash") or "bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_device_script_keeps_its_limits() -> None:
    text = (kit.HERE / "on-device.sh").read_text()
    assert "GPU_CHECK_SECONDS:-450" in text  # within the 8 minutes the issue gives it
    steps = [line.split()[1] for line in text.splitlines() if line.startswith("step ")]
    assert steps == ["setup", "doctor", "pytest-torch", "render", "predict-torch", "pytest-jax", "predict-jax"]
    assert len(steps) + 1 <= 8  # one log each and summary.txt: the device brings back 8 files
    assert "--no-index" in text and "timeout -k 5" in text
