"""Sphinx configuration of the dyn documentation (MyST markdown, numpydoc).

Build: ``sphinx-build -W -b html docs docs/_build/html`` (``pip install ".[docs]"``).
Nothing heavy runs at build time: the output reference (``_ext/dyn_outputs.py``)
runs the real ``dyn`` commands once at toy sizes in a subprocess with
``NUMBA_DISABLE_JIT=1`` (no kernel compilation) and tabulates the files they
write, so the tables come from the code's own metadata.
"""
from __future__ import annotations

import os
import sys
from importlib.metadata import version as _version

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, ROOT)

project = "dyn"
author = "the dyn authors"
copyright = "the dyn authors"
release = _version("dyn")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "dyn_outputs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: $...$ and $$...$$ math, heading anchors for links such as theory.md#exact-recursion
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# numpydoc / autodoc
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"

html_theme = "alabaster"
html_title = f"dyn {release}"
html_static_path = []
html_theme_options = {
    "description": "Benign overfitting dynamics, solved exactly and d-free",
    "fixed_sidebar": True,
}
