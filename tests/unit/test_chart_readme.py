"""charts/gpubatch/README.md is generated from values.yaml (tools/chart_readme.py) and current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("chart_readme", ROOT / "tools" / "chart_readme.py")
assert spec is not None and spec.loader is not None
chart_readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(chart_readme)


def test_the_committed_readme_is_current() -> None:
    readme = ROOT / "charts" / "gpubatch" / "README.md"
    assert readme.read_text() == chart_readme.generate(), \
        "charts/gpubatch/README.md is stale: run `python tools/chart_readme.py` and commit it"
    assert chart_readme.main(["--check"]) == 0


def test_every_leaf_value_is_documented() -> None:
    """A new value without a `# --` comment (on it or on a parent) would be missing from the README."""
    values = yaml.safe_load((ROOT / "charts" / "gpubatch" / "values.yaml").read_text())
    documented = {key for key, _ in chart_readme.documented_keys((ROOT / "charts" / "gpubatch" / "values.yaml").read_text())}

    def leaves(node: object, prefix: str = "") -> list[str]:
        if isinstance(node, dict) and node:
            return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}{k}.")]
        return [prefix.rstrip(".")]

    undocumented = [leaf for leaf in leaves(values)
                    if not any(leaf == d or leaf.startswith(d + ".") for d in documented)]
    assert not undocumented, f"values without a `# --` comment: {undocumented}"


def test_a_comment_makes_a_row_with_type_and_default(tmp_path: Path) -> None:
    chart = tmp_path / "c"
    chart.mkdir()
    (chart / "Chart.yaml").write_text("name: c\nversion: 1.2.3\nappVersion: '9'\ndescription: A chart.\n")
    (chart / "values.yaml").write_text(
        "# A group, not documented itself.\ngroup:\n  # -- How many.\n  # Continued | here.\n  count: 3\n"
        "  undocumented: x\n# -- On or off.\nflag: true\n")
    text = chart_readme.generate(chart)
    assert "| group.count | int | `3` | How many. Continued \\| here. |" in text
    assert "| flag | bool | `true` | On or off. |" in text
    assert "undocumented" not in text and "Chart version 1.2.3, app version 9." in text
