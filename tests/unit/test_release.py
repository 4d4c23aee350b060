"""Release hygiene: one version (pyproject.toml), ``dyn --version``, LICENSE,
CITATION.cff, CHANGELOG.md, a README that fits on a screen or two."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version

from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(name):
    with open(os.path.join(ROOT, name)) as fh:
        return fh.read()


def _pyproject_version():
    return re.search(r'^version = "([^"]+)"', _read("pyproject.toml"), re.M).group(1)


def test_dyn_version_is_the_package_version():
    from compare.cli import main

    res = CliRunner().invoke(main, ["--version"], prog_name="dyn")
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"dyn, version {version('dyn')}"
    assert version("dyn") == _pyproject_version()
    script = os.path.join(os.path.dirname(sys.executable), "dyn")
    if os.path.exists(script):  # the installed entry point, as a user runs it
        proc = subprocess.run([script, "--version"], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip() == f"dyn, version {version('dyn')}"


def test_package_version_attribute_agrees():
    import dynamics

    assert dynamics.__version__ == version("dyn")


def test_license_citation_changelog():
    assert "BSD 3-Clause License" in _read("LICENSE")
    assert "the dyn authors" in _read("LICENSE")
    cff = _read("CITATION.cff")
    assert "cff-version: 1.2.0" in cff and "2410.19139" in cff and "references:" in cff
    assert f'version: "{_pyproject_version()}"' in cff
    assert _read("CHANGELOG.md").startswith("# Changelog")


def test_readme_is_short_and_keeps_the_two_commands():
    text = _read("README.md")
    assert len(text.splitlines()) <= 150
    assert "pip install . && dyn solve --v0 0.001" in text
    assert 'pip install ".[test]" && python -m pytest -q' in text
