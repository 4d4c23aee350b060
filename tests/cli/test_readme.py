"""Every command and code block of README.md and docs/getting-started.md runs.

Blocks are run in document order in one temporary folder (a Python block may
read a file a command before it wrote): ```` ```bash ```` lines as commands,
```` ```python ```` blocks with ``exec``; ```` ```text ```` blocks are output
excerpts and are skipped.  Small settings are appended to every ``dyn``
command, as far as the command accepts them (``--d 100 --n 10 --m 5 --steps 20 ...``),
unless the line sets them itself.  Not run: ``pip install`` (the package under
test is already installed), ``python -m pytest`` (this suite), and
``sphinx-build`` (tests/cli/test_docs.py builds the docs).  Numba's JIT is off in
the commands (NUMBA_DISABLE_JIT=1: the same Python code, no compilation
whatever the state of the kernel cache; the kernels themselves are tested
elsewhere).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCUMENTS = ("README.md", "docs/getting-started.md")

# option -> value (None: a flag) appended when the command has the option
SMALL = {"--d": "100", "--n": "10", "--m": "5", "--n-test": "100", "--seeds": "2", "--steps": "20",
         "--no-verify": None, "--d-grid": "none", "--n-grid": "none",
         "--x": "v0=1e-3..1:2", "--y": "mu=1..10:3", "--quiet": None}
SKIP = ("pip install", "python -m pytest", "sphinx-build")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def blocks(path):
    """(language, text) of every fenced block, in order."""
    with open(os.path.join(ROOT, path)) as fh:
        return [(m.group(1), m.group(2)) for m in FENCE.finditer(fh.read())]


def commands(text):
    """Shell commands of a bash block: continuations joined, comments dropped,
    ``a && b`` split."""
    joined = text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            out += [part.strip() for part in line.split("&&")]
    return out


def small(argv):
    """argv of a dyn command with the small settings the command accepts."""
    from compare.cli import main

    sub = main.commands.get(argv[1]) if len(argv) > 1 else None
    if sub is None:
        return argv
    accepted = {opt for p in sub.params for opt in p.opts + p.secondary_opts}
    extra = []
    for opt, val in SMALL.items():
        if opt in accepted and opt not in argv:
            extra += [opt] if val is None else [opt, val]
    if "--verify" in argv:
        extra = [x for x in extra if x != "--no-verify"]
    return argv + extra


def _cases():
    return [pytest.param(doc, id=doc) for doc in DOCUMENTS]


@pytest.mark.parametrize("doc", _cases())
def test_document_blocks_run(doc, tmp_path):
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", MPLBACKEND="Agg")
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    ran = 0
    for lang, text in blocks(doc):
        if lang == "python":
            code = compile(text, f"{doc}:python block", "exec")
            proc = subprocess.run([sys.executable, "-c", text], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, f"{doc}: python block failed\n{text}\n{proc.stderr[-3000:]}"
            assert code is not None
            ran += 1
        elif lang in ("bash", "sh", "shell", "console"):
            for cmd in commands(text):
                if cmd.startswith(SKIP):
                    continue
                argv = shlex.split(cmd)
                assert argv[0] == "dyn", f"{doc}: unexpected command {cmd!r}"
                argv = small(argv)
                proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True,
                                      text=True, timeout=900)
                assert proc.returncode == 0, (f"{doc}: {' '.join(argv)} failed\n"
                                              f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
                ran += 1
    assert ran > 0


def test_small_settings_only_where_accepted():
    argv = small(["dyn", "simulate", "--mu", "8"])
    assert "--seeds" not in argv and "--d" in argv and "--no-verify" not in argv
    argv = small(["dyn", "solve", "--v0", "0.001", "--d", "200"])
    assert argv.count("--d") == 1 and "--no-verify" in argv and "--d-grid" in argv
