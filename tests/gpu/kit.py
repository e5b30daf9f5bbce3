"""The GPU kit: the wheels the device machine lacks, checked before they travel.

    python tests/gpu/kit.py pins                   # the pinned requirements, one a line (kit.sh downloads them)
    python tests/gpu/kit.py check [FOLDER]         # the downloaded kit is whole and fits: prints its size
    python tests/gpu/kit.py install-list [FOLDER]  # on the device: the kit's wheels this Python still needs
    python tests/gpu/kit.py imports                # the project's GPU-path imports that nothing covers

The device machine (tests/gpu/device-packages.txt) runs Python 3.12 on
manylinux x86-64 and reaches no package index: what the project imports there
and the image lacks travels as wheels with the working tree (`make gpu-kit`,
carried as `.gpu-kit`). `check` refuses a kit that is not exactly the pinned
set (tests/gpu/kit-requirements.txt, one version each), holds a wheel that
would not install there, leaves a requirement of a kit wheel unmet by the kit
and the device together, or is over LIMIT_BYTES. `imports` follows the
project's imports from the GPU-path entry points (lazy imports inside
functions included, which is where frameworks are imported) and names every
third-party module that neither the device nor the kit provides and
NOT_CARRIED does not explain.

Standard library and `packaging` (on the device) only: this file runs there too.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version
except ImportError:  # pragma: no cover - pip always vendors it
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.specifiers import SpecifierSet  # type: ignore[no-redef]
    from pip._vendor.packaging.version import Version  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REQUIREMENTS = HERE / "kit-requirements.txt"
DEVICE_PACKAGES = HERE / "device-packages.txt"
DEFAULT_FOLDER = ROOT / ".gpu-kit"
LIMIT_BYTES = 60 * 2**20  # the kit's own limit; the device takes 64 MiB per call, the tree included

# The device's interpreter and platform, for the wheels' tags and their requirements' markers.
PYTHON_TAGS = {"py3", "py312", "cp312", "py2.py3"}
ABI_TAGS = {"none", "abi3", "cp312"}
MAX_GLIBC = (2, 39)  # Ubuntu 24.04 (Python 3.12.3)
DEVICE_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                  "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                  "implementation_name": "cpython", "platform_python_implementation": "CPython",
                  "platform_release": "", "platform_version": "", "implementation_version": "3.12.3",
                  "extra": ""}

# Where the project's code runs on the device: the CLI (`gpubatch doctor`, `gpubatch run`),
# the pod entry point, the GPU tests and the GPU benchmarks, and this file.
GPU_ENTRY_POINTS = ["jobs/gpubatch_jobs/cli.py", "jobs/gpubatch_jobs/entrypoint.py", "tests/conftest.py",
                    "tests/gpu/conftest.py", "tests/gpu/test_predict_gpu.py", "tests/gpu/test_render_gpu.py",
                    "tests/gpu/test_train_gpu.py", "tests/gpu/kit.py", "bench/render.py", "bench/predict.py",
                    "bench/seed_process.py", "bench/seed_predict.py"]
FIRST_PARTY_ROOTS = ["jobs", "operator", "."]
# Imported on those paths, deliberately neither on the device nor in the kit.
NOT_CARRIED = {
    "tensorflow": "about 600 MB with its needs, over the 64 MiB a call carries: on the device the Keras "
                  "engines run on torch and JAX, and the TensorFlow GPU path stays unverified",
    "pyspark": "PredictJob engine: spark (a JVM too); the GPU check runs engine: local",
    "kubernetes": "the cluster client (`gpubatch submit`, Client()): the GPU check runs jobs locally, "
                  "talking to no API server",
}
# Import name -> distribution name, where they differ.
MODULE_DISTRIBUTIONS = {"yaml": "pyyaml", "cupy": "cupy-cuda13x", "cupyx": "cupy-cuda13x", "sklearn": "scikit-learn",
                        "PIL": "pillow", "google": "protobuf", "_pytest": "pytest", "absl": "absl-py",
                        "pydantic_core": "pydantic-core", "typing_extensions": "typing-extensions",
                        "prometheus_client": "prometheus-client", "dateutil": "python-dateutil"}


class KitError(Exception):
    """The kit (or its requirement list) is not fit to travel; the message lists every problem."""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path = REQUIREMENTS) -> dict[str, str]:
    """{name: version} from `name==version` lines; anything looser, or a name twice, is an error."""
    pins: dict[str, str] = {}
    problems = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        if not match:
            problems.append(f"{path.name}:{number}: {line!r} is not NAME==VERSION (the kit pins one version each)")
            continue
        name = normalize(match[1])
        if name in pins:
            problems.append(f"{path.name}:{number}: {name} is pinned twice (two versions stop the whole install)")
        pins[name] = match[2]
    if problems:
        raise KitError("\n".join(problems))
    return pins


def read_device(path: Path = DEVICE_PACKAGES) -> dict[str, str | None]:
    """{name: version or None where unknown} of the device image's packages."""
    device: dict[str, str | None] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            device[normalize(name)] = version or None
    return device


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str
    version: str
    tags: tuple[str, str, str]

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def requirements(self) -> list[Requirement]:
        """The wheel's Requires-Dist that apply on the device (no extras)."""
        with zipfile.ZipFile(self.path) as archive:
            metadata = next((n for n in archive.namelist()
                             if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
            if metadata is None:
                raise KitError(f"{self.path.name}: no .dist-info/METADATA inside (a broken download?)")
            text = archive.read(metadata).decode("utf-8", "replace")
        header = text.split("\n\n", 1)[0]
        return on_device([line.split(":", 1)[1].strip() for line in header.splitlines()
                          if line.startswith("Requires-Dist:")])


def on_device(requirements: Iterable[str]) -> list[Requirement]:
    """The requirements (Requires-Dist strings) that apply on the device, extras left out."""
    found = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(DEVICE_MARKERS):
            found.append(requirement)
    return found


def parse_wheel(path: Path) -> Wheel:
    parts = path.name[: -len(".whl")].split("-")
    if not path.name.endswith(".whl") or len(parts) not in (5, 6):
        raise KitError(f"{path.name}: not a wheel file name (NAME-VERSION[-BUILD]-PY-ABI-PLATFORM.whl)")
    return Wheel(path, normalize(parts[0]), parts[1], (parts[-3], parts[-2], parts[-1]))


def platform_ok(platform: str) -> bool:
    if platform == "any":
        return True
    legacy = {"manylinux1_x86_64": (2, 5), "manylinux2010_x86_64": (2, 12), "manylinux2014_x86_64": (2, 17)}
    if platform in legacy:
        return legacy[platform] <= MAX_GLIBC
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", platform)
    return bool(match) and (int(match[1]), int(match[2])) <= MAX_GLIBC


def installs_on_device(wheel: Wheel) -> bool:
    python, abi, platforms = wheel.tags
    return (any(tag in PYTHON_TAGS for tag in python.split(".")) or python in PYTHON_TAGS) \
        and any(tag in ABI_TAGS for tag in abi.split(".")) and any(platform_ok(p) for p in platforms.split("."))


@dataclass
class Kit:
    wheels: list[Wheel]
    total_bytes: int
    floors: list[str] = field(default_factory=list)  # device packages carried only for a newer version


def check(folder: Path, pins: dict[str, str] | None = None, device: dict[str, str | None] | None = None,
          limit: int = LIMIT_BYTES) -> Kit:
    """The kit in `folder`, or KitError naming every problem (and the fix)."""
    pins = read_pins() if pins is None else pins
    device = read_device() if device is None else device
    if not folder.is_dir():
        raise KitError(f"{folder}: no kit here; run `make gpu-kit`")
    problems: list[str] = []
    wheels: dict[str, Wheel] = {}
    for path in sorted(folder.iterdir()):
        try:
            wheel = parse_wheel(path)
        except KitError as err:
            problems.append(f"{err}: only the pinned wheels belong in {folder.name}/")
            continue
        if wheel.name in wheels:
            problems.append(f"{wheel.name}: two wheels ({wheels[wheel.name].path.name}, {path.name}); "
                            "keep one version, two stop the whole install")
            continue
        wheels[wheel.name] = wheel
        if wheel.name not in pins:
            problems.append(f"{path.name}: not in {REQUIREMENTS.name}; remove it or pin it there")
        elif Version(wheel.version) != Version(pins[wheel.name]):
            problems.append(f"{path.name}: {REQUIREMENTS.name} pins {wheel.name}=={pins[wheel.name]}")
        if not installs_on_device(wheel):
            problems.append(f"{path.name}: tags {'-'.join(wheel.tags)} do not install on CPython 3.12 "
                            "manylinux x86-64 (download with kit.sh, which names that platform)")
    for name, version in pins.items():
        if name not in wheels:
            problems.append(f"{name}=={version}: pinned but not downloaded; run `make gpu-kit`")
    requires: dict[str, list[Requirement]] = {}
    for wheel in wheels.values():
        try:
            requires[wheel.name] = wheel.requirements()
        except (KitError, zipfile.BadZipFile) as err:
            problems.append(f"{wheel.path.name}: {err}")
    closure, floors = requirement_problems({w.name: w.version for w in wheels.values()}, requires, device)
    problems += closure
    total = sum(w.size for w in wheels.values())
    if total > limit:
        problems.append(f"the kit is {total / 2**20:.1f} MiB, over its {limit / 2**20:.0f} MiB limit "
                        "(the device takes 64 MiB per call, working tree included)")
    if problems:
        raise KitError("\n".join(problems))
    return Kit(sorted(wheels.values(), key=lambda w: w.name), total, floors)


def requirement_problems(kit: dict[str, str], requires: dict[str, list[Requirement]],
                         device: dict[str, str | None]) -> tuple[list[str], list[str]]:
    """(problems, floors): is every requirement of the kit's packages met by the kit and the device together?

    `kit` is {name: version} of the kit's packages, `requires` their Requires-Dist
    that apply on the device. A floor is a device package the kit carries only
    because a kit package needs a version of it the device may not have.
    """
    problems = []
    floors: set[str] = set()
    for name, requirements in requires.items():
        for requirement in requirements:
            need = normalize(requirement.name)
            spec = requirement.specifier
            if need in kit:
                if not spec.contains(kit[need], prereleases=True):
                    problems.append(f"{name} needs {need}{spec}, the kit has {kit[need]}")
                if need in device:
                    floors.add(need)
            elif need in device:
                known = device[need]
                if known is not None and not spec.contains(known, prereleases=True):
                    problems.append(f"{name} needs {need}{spec}, the device has {known}: pin a newer "
                                    f"{need} in {REQUIREMENTS.name}")
                elif known is None and str(spec):
                    problems.append(f"{name} needs {need}{spec}, and the device's {need} version is not "
                                    f"recorded: pin {need} in {REQUIREMENTS.name} (installed there only if older)")
            else:
                problems.append(f"{name} needs {need}, which neither the device nor the kit has: pin it "
                                f"in {REQUIREMENTS.name}")
    for name in kit:
        if name in device and name not in floors:
            problems.append(f"{name}: the device has it and no kit package needs a version of it; drop it from "
                            f"{REQUIREMENTS.name}")
    return problems, sorted(floors)


def install_list(folder: Path, installed: Callable[[str], str | None], device: dict[str, str | None] | None = None,
                 ) -> list[Path]:
    """The kit's wheels to install where `installed(name)` gives this Python's versions.

    A wheel of a package the device image already has (a floor, carried for a
    newer version) is left out when the installed version meets every kit
    wheel's requirement on it, so the device's own copy is not shadowed.
    """
    device = read_device() if device is None else device
    wheels = [parse_wheel(p) for p in sorted(folder.glob("*.whl"))]
    needs: dict[str, list[SpecifierSet]] = {}
    for wheel in wheels:
        for requirement in wheel.requirements():
            needs.setdefault(normalize(requirement.name), []).append(requirement.specifier)
    chosen = []
    for wheel in wheels:
        have = installed(wheel.name) if wheel.name in device else None
        if have is not None and all(spec.contains(have, prereleases=True) for spec in needs.get(wheel.name, [])):
            continue
        chosen.append(wheel.path)
    return chosen


# -- the project's imports on the GPU paths ------------------------------------------


def _module_file(module: str, near: Path) -> Path | None:
    parts = module.split(".")
    for base in [*(ROOT / r for r in FIRST_PARTY_ROOTS), near]:
        for candidate in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate.resolve()
    return None


def _imported_names(tree: ast.AST, path: Path) -> Iterable[str]:
    package = path.parent
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = package
                for _ in range(node.level - 1):
                    base = base.parent
                prefix = ".".join(base.relative_to(ROOT / "jobs").parts) if base.is_relative_to(ROOT / "jobs") \
                    else ".".join(base.relative_to(ROOT).parts)
                module = ".".join(p for p in (prefix, node.module or "") if p)
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def gpu_path_imports(entry_points: Iterable[str] = GPU_ENTRY_POINTS) -> dict[str, set[str]]:
    """{third-party top-level module: files that import it}, following first-party imports."""
    found: dict[str, set[str]] = {}
    todo = [(ROOT / p).resolve() for p in entry_points]
    seen: set[Path] = set()
    stdlib = set(sys.stdlib_module_names)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        for module in _imported_names(tree, path):
            if not module or module == "__future__":
                continue
            top = module.split(".")[0]
            local = _module_file(module, path.parent)
            if local is not None:
                todo.append(local)
                for depth in range(1, module.count(".") + 1):  # the packages on the way run their __init__
                    parent = _module_file(".".join(module.split(".")[:depth]), path.parent)
                    if parent is not None:
                        todo.append(parent)
            elif top in stdlib or _module_file(top, path.parent) is not None:
                continue  # standard library, or a first-party name (x.attribute) that is no module
            else:
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def uncovered_imports(pins: dict[str, str] | None = None, device: dict[str, str | None] | None = None,
                      imports: dict[str, set[str]] | None = None) -> list[str]:
    """Problems: GPU-path imports nothing provides, and NOT_CARRIED entries nothing imports any more."""
    pins = read_pins() if pins is None else pins
    device = read_device() if device is None else device
    imports = gpu_path_imports() if imports is None else imports
    problems = []
    dists = {module: normalize(MODULE_DISTRIBUTIONS.get(module, module)) for module in imports}
    for module, dist in sorted(dists.items()):
        if dist not in device and dist not in pins and dist not in NOT_CARRIED:
            problems.append(f"{module} (distribution {dist}), imported by {', '.join(sorted(imports[module]))}: "
                            f"neither the device nor the kit has it; pin it in {REQUIREMENTS.name} "
                            f"or explain in NOT_CARRIED why the GPU check does without it")
    for dist in sorted(set(NOT_CARRIED) - set(dists.values())):
        problems.append(f"NOT_CARRIED names {dist}, which the GPU paths no longer import: remove it")
    for dist in sorted(set(NOT_CARRIED) & (set(device) | set(pins))):
        problems.append(f"NOT_CARRIED names {dist}, which the device or the kit has: remove it")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["pins", "check", "install-list", "imports"])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "pins":
            print("\n".join(f"{name}=={version}" for name, version in read_pins().items()))
        elif args.command == "check":
            kit = check(args.folder)
            for wheel in kit.wheels:
                print(f"  {wheel.path.name:<70} {wheel.size / 2**20:6.2f} MiB"
                      f"{'  (device has it; installed only if older)' if wheel.name in kit.floors else ''}")
            print(f"gpu-kit: {len(kit.wheels)} wheels, {kit.total_bytes / 2**20:.2f} MiB in all "
                  f"({kit.total_bytes:,} bytes; limit {LIMIT_BYTES / 2**20:.0f} MiB) in {args.folder}")
        elif args.command == "install-list":
            from importlib.metadata import PackageNotFoundError, version

            def installed(name: str) -> str | None:
                try:
                    return version(name)
                except PackageNotFoundError:
                    return None

            print("\n".join(str(p) for p in install_list(args.folder, installed)))
        else:
            problems = uncovered_imports()
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                return 1
            print("gpu-kit: every GPU-path import is on the device, in the kit, or in NOT_CARRIED")
    except KitError as err:
        print(f"gpu-kit: {err}".replace("\n", "\n  "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
