"""The README states exactly two set-up commands, and CI runs the test one as written."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.findall(r"<!-- setup:(\w+) -->\s*```bash\n(.*?)\n```", text, flags=re.S)
    return dict(found)


def test_exactly_two_setup_commands_each_one_line() -> None:
    blocks = _blocks()
    assert sorted(blocks) == ["main", "test"]
    for cmd in blocks.values():
        assert "\n" not in cmd.strip()
        assert cmd.startswith("python3 -m venv .venv && ")
    assert "stratagem ablate" in blocks["main"]
    assert "pytest" in blocks["test"] and "python -m pytest" not in blocks["test"]


def test_ci_extracts_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    awk = re.search(r"cmd=\$\(awk '([^']*)' README.md\)", script)
    assert awk is not None, ".ci/run must read the test command from the README"
    out = subprocess.run(
        ["awk", awk.group(1), "README.md"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == _blocks()["test"].strip()


def test_the_claims_section_names_every_claim_config_and_has_a_findings_row_per_claim() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The claims as experiments", 1)[1].split("\n## ", 1)[0]
    configs = sorted(p.name for p in (ROOT / "examples" / "claims").glob("*.toml")
                     if not p.name.endswith(".simulated.toml"))
    assert len(configs) == 6
    for name in configs:
        assert f"`{name}`" in section, name
    # The Findings tables (real runs, then the simulated twins): one row per claim each.
    for claim in "abcdef":
        rows = [line for line in section.splitlines() if line.startswith(f"| ({claim}) ")]
        assert len(rows) >= 2, claim
    assert "--backend" in section and "--base-url" in section and "--model" in section
