"""Sphinx extension: the output reference, generated from the files dyn writes.

At the start of every build the real ``dyn`` commands run once at toy sizes
(n = 4, d = 50, m = 2, a handful of steps) in a subprocess with
``NUMBA_DISABLE_JIT=1``, so no Numba kernel is compiled and the whole run takes
seconds.  The netCDF files they write are opened and every dimension,
coordinate, variable (with its ``long_name``, ``units``, ``comment``) and global
attribute is recorded.  The directives below turn that record into tables, so
the reference cannot drift from ``compare/dataset.py`` (``_META``),
``dynamics/theory/measure.py`` (``MECHANISM_ATTRS``), ``compare/solve.py`` and
``compare/phase.py``: change a name or a long_name there and the page changes.

Directives (MyST: ```` ```{dyn-outputs} solve ````)::

    .. dyn-outputs:: KEY        variables and coordinates of one output file
       :what: variables | dimensions | attributes
    .. dyn-params::             the model parameters (dynamics.params.PARAMS)

Run as a script (``python docs/_ext/dyn_outputs.py OUT.json``) it only
generates the record.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TOY = ["--n", "4", "--d", "50", "--m", "2", "--n-test", "20"]

# key -> (title, dyn command line, file written, variants merged into it)
RUNS = {
    "simulate": ("dyn simulate --out FILE.nc",
                 ["simulate", *TOY, "--steps", "3", "--out", "simulate.nc"], "simulate.nc"),
    "simulate_deep": ("dyn simulate --depth 2 --out FILE.nc",
                      ["simulate", *TOY, "--steps", "3", "--depth", "2",
                       "--out", "simulate_deep.nc"], "simulate_deep.nc"),
    "simulate_general": ("dyn simulate --level general --out FILE.nc",
                         ["simulate", *TOY, "--steps", "3", "--level", "general",
                          "--out", "simulate_general.nc"], "simulate_general.nc"),
    "compare": ("dyn compare --out FILE.nc",
                ["compare", *TOY, "--steps", "3", "--out", "compare.nc"], "compare.nc"),
    "solve": ("dyn solve --times T1,T2 --out DIR (DIR/solve.nc)",
              ["solve", *TOY, "--v0", "0.001", "--steps", "5", "--seeds", "2",
               "--d-grid", "50,100", "--n-grid", "4,8", "--verify-seeds", "1",
               "--times", "3,5", "--out", "solve", "--quiet"], "solve/solve.nc"),
    "phase": ("dyn phase --times T1,T2 --out DIR (DIR/phase.nc)",
              ["phase", *TOY, "--x", "v0=1e-3..1:2", "--y", "mu=1..10:3",
               "--seeds", "2", "--times", "3,5", "--out", "phase", "--quiet"],
              "phase/phase.nc"),
}


# ----------------------------------------------------------------------------
# generation (subprocess)
# ----------------------------------------------------------------------------
def _text(value, limit=60) -> str:
    text = value if isinstance(value, str) else repr(getattr(value, "item", lambda: value)())
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe(path) -> dict:
    """Dimensions, coordinates, variables and attributes of one netCDF file."""
    import xarray as xr

    with xr.open_dataset(path) as ds:
        def var(name):
            da = ds[name]
            return {"name": name, "dims": list(da.dims), "dtype": str(da.dtype),
                    "long_name": str(da.attrs.get("long_name", "")),
                    "units": str(da.attrs.get("units", "")),
                    "comment": str(da.attrs.get("comment", ""))}
        return {"dims": list(ds.sizes),
                "coords": [var(c) for c in ds.coords],
                "variables": [var(v) for v in ds.data_vars],
                "attrs": [{"name": k, "example": _text(v)} for k, v in ds.attrs.items()]}


def generate(out_json: str) -> None:
    from click.testing import CliRunner

    from compare.cli import main

    record = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = os.getcwd()
        os.chdir(tmp)
        try:
            for key, (title, args, path) in RUNS.items():
                res = CliRunner().invoke(main, args, catch_exceptions=True)
                if res.exit_code != 0 or not os.path.exists(path):
                    raise RuntimeError(f"dyn {' '.join(args)} failed ({res.exit_code}):\n"
                                       f"{res.output}\n{res.exception!r}")
                record[key] = {"title": title, "command": "dyn " + " ".join(args),
                               **describe(path)}
        finally:
            os.chdir(old)
    with open(out_json, "w") as fh:
        json.dump(record, fh, indent=1)


def run_generator(out_json: str, timeout: float = 300) -> None:
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), out_json], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError("generating the output reference failed:\n"
                           + proc.stdout[-3000:] + proc.stderr[-3000:])


# ----------------------------------------------------------------------------
# Sphinx side
# ----------------------------------------------------------------------------
def _table(header, rows, widths=None, literal_cols=(0,)):
    from docutils import nodes

    table = nodes.table(classes=["dyn-table"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for w in widths or [1] * len(header):
        group += nodes.colspec(colwidth=w)

    def row(cells, head=False):
        r = nodes.row()
        for k, cell in enumerate(cells):
            entry = nodes.entry()
            para = nodes.paragraph()
            if cell and k in literal_cols and not head:
                para += nodes.literal(text=cell)
            else:
                para += nodes.Text(cell)
            entry += para
            r += entry
        return r

    thead = nodes.thead()
    thead += row(header, head=True)
    group += thead
    tbody = nodes.tbody()
    for cells in rows:
        tbody += row(cells)
    group += tbody
    return table


def describe_all(record):
    """name -> (description, source) for coordinates, variables and attributes;
    plus the problems (undescribed names, stale entries of descriptions.py)."""
    import descriptions
    from dynamics.params import PARAMS

    code = {}
    for rec in record.values():
        for v in rec["coords"] + rec["variables"]:
            if v["long_name"] and v["name"] not in code:
                code[v["name"]] = v["long_name"]
    used, problems = set(), []

    def lookup(v, table, key):
        if v["long_name"]:
            text = v["long_name"] + (f" ({v['comment']})" if v["comment"] else "")
            return text, "file"
        if v["name"] in code:
            return code[v["name"]], "file"
        if v["name"] in table:
            used.add(v["name"])
            return table[v["name"]], "docs"
        problems.append(f"{key}: {v['name']} has no long_name and no entry in "
                        f"docs/_ext/descriptions.py")
        return "", ""

    params = {p.name: p.help for p in PARAMS}
    out = {}
    for key, rec in record.items():
        coords = {v["name"]: lookup(v, descriptions.COORDS, key) for v in rec["coords"]}
        dims = set(rec["dims"]) - set(coords)  # dimensions without a coordinate
        for d in dims:
            coords[d] = lookup({"name": d, "long_name": "", "comment": ""},
                               descriptions.COORDS, key)
        variables = {v["name"]: lookup(v, descriptions.VARIABLES, key)
                     for v in rec["variables"]}
        attrs = {}
        for a in rec["attrs"]:
            if a["name"] in params:
                attrs[a["name"]] = (params[a["name"]], "PARAMS")
            elif a["name"] in descriptions.ATTRS:
                used.add(a["name"])
                attrs[a["name"]] = (descriptions.ATTRS[a["name"]], "docs")
            else:
                problems.append(f"{key}: attribute {a['name']} is not described in "
                                f"docs/_ext/descriptions.py")
                attrs[a["name"]] = ("", "")
        out[key] = {"coords": coords, "variables": variables, "attrs": attrs}
    for table in (descriptions.COORDS, descriptions.VARIABLES, descriptions.ATTRS):
        for name in table:
            if name not in used and name not in descriptions.OPTIONAL:
                problems.append(f"docs/_ext/descriptions.py: {name} is described but "
                                f"no file uses that description (stale, or it has a "
                                f"long_name now): delete it")
    return out, sorted(set(problems))


def setup(app):
    from docutils.parsers.rst import Directive, directives
    from sphinx.errors import ExtensionError
    from sphinx.util import logging

    logger = logging.getLogger(__name__)

    def builder_inited(app_):
        path = os.path.join(app_.doctreedir, "dyn_outputs.json")
        os.makedirs(app_.doctreedir, exist_ok=True)
        try:
            run_generator(path)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            raise ExtensionError(str(exc)) from None
        with open(path) as fh:
            app_.dyn_outputs = json.load(fh)
        app_.dyn_described, problems = describe_all(app_.dyn_outputs)
        for problem in problems:
            logger.warning("output reference: %s", problem)

    class OutputsDirective(Directive):
        required_arguments = 1
        option_spec = {"what": directives.unchanged}

        def run(self):
            app_ = self.state.document.settings.env.app
            record, described = app_.dyn_outputs, app_.dyn_described
            key = self.arguments[0]
            if key not in record:
                raise self.error(f"unknown output {key!r}; known: {', '.join(record)}")
            rec, desc = record[key], described[key]
            what = self.options.get("what", "variables")
            if what == "attributes":
                rows = [[a["name"], desc["attrs"][a["name"]][0], a["example"]]
                        for a in rec["attrs"]]
                return [_table(["attribute", "meaning", "example (toy run)"], rows,
                               [2, 5, 3])]
            if what == "dimensions":
                rows = [[d, desc["coords"][d][0]] for d in rec["dims"]]
                return [_table(["dimension", "meaning"], rows, [1, 4])]
            items = [(v, desc["variables"][v["name"]], "") for v in rec["variables"]]
            if key == "simulate":  # variables that exist only at depth >= 2
                names = {v["name"] for v in rec["variables"]}
                deep, ddesc = record["simulate_deep"], described["simulate_deep"]
                items += [(v, ddesc["variables"][v["name"]], " (depth >= 2 only)")
                          for v in deep["variables"] if v["name"] not in names]
            rows = [[v["name"], "(" + ", ".join(v["dims"]) + ")", v["dtype"], v["units"],
                     text + note + (" [docs]" if source == "docs" else "")]
                    for v, (text, source), note in items]
            return [_table(["variable", "dims", "dtype", "units", "meaning"], rows,
                           [2, 3, 1, 1, 6])]

    class ParamsDirective(Directive):
        def run(self):
            from dynamics.params import PARAMS

            rows = [[p.flag, p.name, "" if p.default is None else str(p.default),
                     p.range_text(), p.help, "yes" if p.axis else ""] for p in PARAMS]
            return [_table(["option", "Params field", "default", "range", "meaning",
                            "phase axis"], rows, [2, 2, 1, 2, 6, 1], literal_cols=(0, 1))]

    app.connect("builder-inited", builder_inited)
    app.add_directive("dyn-outputs", OutputsDirective)
    app.add_directive("dyn-params", ParamsDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    generate(sys.argv[1])
