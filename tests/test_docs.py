"""The front page and the docs say what the code and the pins say: the README opens with its two commands and
stays a front page, every relative link it gives lands on a file, and the versions the docs name for the test
control plane are the ones its go.mod files pin (the docs site's own links are checked by mkdocs --strict)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PINS = ROOT / "scripts" / "control_plane"


def pinned(module: str, gomod: str) -> str:
    found = re.search(rf"^\s*{re.escape(module)} (v[0-9][^\s]*)", (PINS / gomod / "go.mod").read_text(), re.M)
    assert found, f"{module} is pinned in scripts/control_plane/{gomod}/go.mod"
    return found.group(1)


def test_the_readme_opens_with_the_two_commands_and_stays_short() -> None:
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; the reference belongs in docs/"
    first_block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first_block and text.index("```bash") < text.index("\n## "), "the commands come before any section"
    assert first_block.group(1).strip().splitlines() == [
        "pip install -e . && prewarm serve",
        "bash scripts/test.sh",
    ]
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_every_relative_link_of_the_readme_lands_on_a_file() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert local, "the README links into docs/"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_the_docs_name_the_control_plane_versions_the_tests_pin() -> None:
    pages = {"docs/cluster.md": (ROOT / "docs" / "cluster.md").read_text(), "README.md": README.read_text()}
    for module, gomod, name in [
        ("k8s.io/kubernetes", "kubernetes", "Kubernetes"),
        ("go.etcd.io/etcd/server/v3", "kubernetes", "etcd"),
        ("sigs.k8s.io/kwok", "kwok", "kwok"),
        ("helm.sh/helm/v4", "helm", "Helm"),
    ]:
        version = pinned(module, gomod)
        for page, text in pages.items():
            assert f"{name} {version}" in text, f"{page} names {name} {version}, as {gomod}/go.mod pins it"


def headline(path: Path) -> str:
    text = path.read_text()
    start = "<!-- headline: written by scripts/results.py --only walk-forward -->"
    assert start in text and "<!-- /headline -->" in text, f"{path.name} keeps the headline's markers"
    return text.split(start, 1)[1].split("<!-- /headline -->", 1)[0].strip()


def test_both_front_pages_carry_the_same_generated_headline() -> None:
    readme, site = headline(README), headline(ROOT / "docs" / "index.md")
    assert readme == site
    assert "median" in readme and "(regenerated)" not in readme


def test_the_results_check_takes_another_cpu_s_last_digits_and_nothing_else() -> None:
    """prophet's fit lands a few units of the last digit apart on another CPU; a changed number, word or
    line is still a stale page."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("prewarm_results", ROOT / "scripts" / "results.py")
    assert spec is not None and spec.loader is not None
    results = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = results  # its dataclasses look their module up while it loads
    spec.loader.exec_module(results)
    same = results.same_up_to_noise
    row = "| `prophet` | 1.680 | 0.443 | 0.3266 | 0.769 | 0.977 | 1.000 |"
    assert same(row, "| `prophet` | 1.683 | 0.443 | 0.3269 | 0.769 | 0.976 | 1.000 |")
    assert not same(row, "| `prophet` | 1.720 | 0.443 | 0.3266 | 0.769 | 0.977 | 1.000 |")
    assert not same(row, "| `ets` | 1.680 | 0.443 | 0.3266 | 0.769 | 0.977 | 1.000 |")
    assert not same(row, row + "\nmore")
    assert not same("met at 99.9%", "met at 99.9 %")
