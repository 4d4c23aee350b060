"""Imports go one way only: dynamics <- fullsim <- compare (the CLI on top).

Checked twice: dynamically (what a fresh interpreter has loaded after an
import) and statically (every ``import`` statement of every module).
"""
import ast
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("dynamics", "fullsim", "compare")


def loaded_after(imports: str, names) -> list:
    """Names (top-level packages) present in sys.modules of a fresh interpreter
    after executing ``imports``."""
    code = (f"import sys\n{imports}\n"
            f"print(' '.join(n for n in {list(names)!r} if n in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_dynamics_loads_nothing_above_it():
    heavy = ("compare", "fullsim", "sympy", "click", "xarray", "matplotlib")
    loaded = loaded_after("import dynamics, dynamics.run, dynamics.boundary, "
                          "dynamics.kernels, dynamics.data, dynamics.params", heavy)
    assert loaded == [], f"importing dynamics loaded {loaded}"


def test_fullsim_loads_neither_compare_nor_click():
    loaded = loaded_after("import fullsim, fullsim.network, fullsim.batch",
                          ("compare", "click", "matplotlib"))
    assert loaded == [], f"importing fullsim loaded {loaded}"


def test_theory_measure_does_not_load_sympy():
    if importlib.util.find_spec("dynamics.theory") is None or \
            importlib.util.find_spec("dynamics.theory.measure") is None:
        pytest.skip("dynamics.theory.measure does not exist yet")
    loaded = loaded_after("import dynamics.theory.measure", ("sympy", "compare", "click"))
    assert loaded == [], f"importing dynamics.theory.measure loaded {loaded}"


def test_library_does_not_load_the_cli():
    """The library (compare included) never needs the CLI module."""
    loaded = loaded_after("import compare, compare.phase, compare.solve, compare.dataset, "
                          "compare.boundaries, compare.verify, compare.store",
                          ("compare.cli",))
    assert loaded == []


# ------------------------------------------------------------------ static
def modules(package):
    """(module name, path) of every .py file of ``package``."""
    base = os.path.join(ROOT, package)
    out = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__"))]
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out.append((rel[:-len(".__init__")] if rel.endswith(".__init__") else rel, path))
    return out


def imported_modules(name, path):
    """Absolute names of every module ``path`` imports (relative imports resolved;
    ``from X import Y`` counts X and X.Y)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    is_pkg = path.endswith("__init__.py")
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                node.func, "id", None)) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def _top(mod):
    return mod.split(".")[0]


def test_module_discovery_finds_the_packages():
    names = {n for pkg in PACKAGES for n, _ in modules(pkg)}
    for expected in ("dynamics.params", "dynamics.kernels", "dynamics.boundary",
                     "fullsim.network", "compare.cli", "compare.phase"):
        assert expected in names


@pytest.mark.parametrize("package,forbidden", [("dynamics", ("compare", "fullsim")),
                                               ("fullsim", ("compare",))])
def test_static_imports_go_one_way(package, forbidden):
    bad = []
    for name, path in modules(package):
        for mod in imported_modules(name, path):
            if _top(mod) in forbidden:
                bad.append(f"{os.path.relpath(path, ROOT)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_nothing_imports_the_cli():
    bad = []
    for pkg in PACKAGES:
        for name, path in modules(pkg):
            if name == "compare.cli":
                continue
            if "compare.cli" in imported_modules(name, path):
                bad.append(os.path.relpath(path, ROOT))
    assert not bad, f"modules importing compare.cli: {bad}"


def test_static_check_sees_relative_imports(tmp_path):
    """The checker itself: relative and dynamic imports are resolved."""
    path = tmp_path / "x.py"
    path.write_text("from .cli import main\nfrom ..fullsim import network\n"
                    "import importlib\nimportlib.import_module('compare.cli')\n")
    mods = imported_modules("compare.sub.x", str(path))
    assert {"compare.sub.cli", "compare.fullsim", "compare.cli"} <= mods
    assert "compare.cli" in imported_modules("compare.x", str(path))


def test_every_package_is_installed():
    """pyproject's package discovery covers every package (a non-editable
    install once missed dynamics.theory while tests from the tree passed)."""
    import pathlib

    from setuptools import find_packages

    root = pathlib.Path(__file__).resolve().parents[2]
    found = set(find_packages(str(root), include=["dynamics", "dynamics.*", "fullsim",
                                                  "fullsim.*", "compare", "compare.*"]))
    on_disk = {str(p.parent.relative_to(root)).replace("/", ".")
               for top in ("dynamics", "fullsim", "compare")
               for p in (root / top).rglob("__init__.py")}
    assert on_disk <= found, on_disk - found
    text = (root / "pyproject.toml").read_text()
    assert '"dynamics.*"' in text and '"compare.*"' in text
