"""compare.store.SweepStore: resumable, locked, row-chunked Zarr sweep store."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from compare.store import StoreBusy, StoreError, SweepStore

# no zarr/xarray warnings (consolidated metadata, unstable v3 dtypes, ...)
pytestmark = pytest.mark.filterwarnings("error")

# shared by this process and the subprocesses
SETUP = textwrap.dedent("""
    import numpy as np, xarray as xr
    from compare.store import SweepStore, StoreBusy
    TEMPLATE = xr.Dataset(
        {"err": (("x", "y", "seed"), np.zeros((4, 3, 2))),
         "loss": (("x", "y", "seed"), np.zeros((4, 3, 2), np.float32)),
         "fit": (("x", "y"), np.zeros((4, 3), np.int64))},
        coords={"x": [0.1, 0.2, 0.4, 0.8], "y": [1, 2, 3], "seed": [0, 1],
                "x_label": ("x", ["a", "b", "c", "d"]), "kx": ("x", np.arange(4))},
        attrs={"title": "phase"})
    SPEC = {"params": {"eta": 0.01, "d": 400}, "x": ["v0", [0.1, 0.8]], "seeds": 2}

    def row(ix):
        rng = np.random.default_rng(ix)
        return {"err": rng.random((3, 2)), "loss": rng.random((3, 2)).astype(np.float32),
                "fit": rng.integers(-5, 5, size=3)}
""")
ns: dict = {}
exec(SETUP, ns)
TEMPLATE, SPEC, row = ns["TEMPLATE"], ns["SPEC"], ns["row"]


def spec(**params):
    return {**SPEC, "params": {**SPEC["params"], **params}}


def child(code, path):
    """Start SETUP + code in a fresh interpreter (PATH defined), talking over pipes."""
    src = SETUP + f"PATH = {str(path)!r}\n" + textwrap.dedent(code)
    return subprocess.Popen([sys.executable, "-c", src], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_line(proc):
    line = proc.stdout.readline()
    if not line:  # the child died: show why
        proc.wait(timeout=30)
        pytest.fail(f"child exited {proc.returncode}: {proc.stderr.read()}")
    return line.strip()


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def test_round_trip_and_resume(tmp_path):
    path = tmp_path / "out" / "phase.zarr"  # parent created on demand
    with SweepStore(path, TEMPLATE, "x", SPEC) as st:
        assert st.finished() == []
        st.save(2, row(2))
        st.save(0, row(0))
        assert st.finished() == [0, 2]
        with pytest.raises(StoreError, match="2 of 4 rows not finished"):
            st.open()
    assert sorted(os.listdir(tmp_path / "out")) == ["phase.zarr", "phase.zarr.lock"]

    with SweepStore(str(path) + "/", TEMPLATE, "x", SPEC) as st:  # resume
        assert st.finished() == [0, 2]
        st.save(np.int64(1), row(1))
        st.save(3, row(3))
        assert st.finished() == [0, 1, 2, 3]
        ds = st.open()
    assert "_row_done" not in ds.variables
    assert ds.attrs["fingerprint"] == st.fingerprint and ds.attrs["title"] == "phase"
    assert not ds["err"].variable._in_memory  # lazy (no dask), 4 rows in one Zarr chunk
    assert ds["err"].encoding["chunks"][0] == 4  # rows 2, 0, then 1, 3: read-modify-writes
    for name in TEMPLATE.data_vars:
        assert ds[name].dims == TEMPLATE[name].dims
        assert ds[name].dtype == TEMPLATE[name].dtype
        np.testing.assert_array_equal(ds[name].values, np.stack([row(i)[name] for i in range(4)]))
    for name in TEMPLATE.coords:
        np.testing.assert_array_equal(ds[name].values.astype(TEMPLATE[name].dtype),
                                      TEMPLATE[name].values)


def test_save_validates_rows(tmp_path):
    with SweepStore(tmp_path / "p.zarr", TEMPLATE, "x", SPEC) as st:
        bad = {**row(0), "err": np.zeros((2, 3))}
        with pytest.raises(StoreError, match=r"'err' has shape \(2, 3\), expected \(3, 2\)"):
            st.save(0, bad)
        with pytest.raises(StoreError, match="missing variables"):
            st.save(0, {"err": np.zeros((3, 2))})
        with pytest.raises(StoreError, match="row index"):
            st.save(4, row(0))
        with pytest.raises(StoreError, match="dtype"):
            st.save(0, {**row(0), "fit": np.full(3, 0.5)})
        with pytest.raises(StoreError, match="does not fit"):
            st.save(0, {**row(0), "fit": np.full(3, 2**64 - 1, dtype=np.uint64)})
        assert st.finished() == []
        st.save(1, row(1))
        st.save(1, row(2))  # rewriting a finished row is allowed
        assert st.finished() == [1]
    with pytest.raises(StoreError, match="closed"):
        st.save(0, row(0))


def test_save_rows_writes_runs_like_save(tmp_path):
    """save_rows: runs of consecutive rows in one write each, any order, the
    same numbers as row by row; a bad row refuses the whole call."""
    with SweepStore(tmp_path / "p.zarr", TEMPLATE, "x", SPEC) as st:
        with pytest.raises(StoreError, match="'err' has shape"):
            st.save_rows({0: row(0), 1: {**row(1), "err": np.zeros((2, 3))}})
        assert st.finished() == []
        st.save_rows({3: row(3), 0: row(0), 1: row(1)})  # runs [0, 1] and [3]
        assert st.finished() == [0, 1, 3]
        st.save_rows({2: row(2), 3: row(3)})  # rewriting 3
        ds = st.open()
        for name in TEMPLATE.data_vars:
            np.testing.assert_array_equal(ds[name].values,
                                          np.stack([row(i)[name] for i in range(4)]))


def test_rows_per_chunk_bounds():
    """R rows per chunk: at most ROWS_PER_CHUNK_MAX and the row count, and a
    chunk of the largest variable within CHUNK_BYTES (one row if a row is larger)."""
    import xarray as xr
    from compare.store import CHUNK_BYTES, ROWS_PER_CHUNK_MAX, rows_per_chunk

    assert rows_per_chunk(TEMPLATE, "x") == 4
    many = xr.Dataset({"a": (("x", "y"), np.zeros((100, 3)))})
    assert rows_per_chunk(many, "x") == ROWS_PER_CHUNK_MAX
    per_row = CHUNK_BYTES // 8 // 3  # float64 elements of a row that take 1/3 of a chunk
    big = xr.Dataset({"a": (("x", "y"), np.zeros((100, per_row))),
                      "b": (("x", "y"), np.zeros((100, per_row), np.int8))})
    assert rows_per_chunk(big, "x") == 3
    huge = xr.Dataset({"a": (("x", "y"), np.zeros((5, CHUNK_BYTES // 4)))})
    assert rows_per_chunk(huge, "x") == 1


def test_store_with_one_row_chunks_resumes(tmp_path, monkeypatch):
    """A store written with one row per chunk (before multi-row chunks) resumes
    in its own layout, with the same numbers."""
    import compare.store as store_mod
    path = tmp_path / "p.zarr"
    monkeypatch.setattr(store_mod, "ROWS_PER_CHUNK_MAX", 1)
    with SweepStore(path, TEMPLATE, "x", SPEC) as st:
        st.save_rows({0: row(0), 2: row(2)})
    monkeypatch.undo()
    with SweepStore(path, TEMPLATE, "x", SPEC) as st:
        assert st.finished() == [0, 2]
        st.save_rows({1: row(1), 3: row(3)})
        ds = st.open()
        assert ds["err"].encoding["chunks"][0] == 1
        for name in TEMPLATE.data_vars:
            np.testing.assert_array_equal(ds[name].values,
                                          np.stack([row(i)[name] for i in range(4)]))


def test_rows_saved_from_threads_share_chunks(tmp_path):
    """Rows of one chunk saved from several threads at once: none is lost
    (the read-modify-writes of a chunk are serialised)."""
    from concurrent.futures import ThreadPoolExecutor
    with SweepStore(tmp_path / "p.zarr", TEMPLATE, "x", SPEC) as st:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda ix: st.save(ix, row(ix)), [3, 1, 0, 2]))
        assert st.finished() == [0, 1, 2, 3]
        ds = st.open()
        for name in TEMPLATE.data_vars:
            np.testing.assert_array_equal(ds[name].values,
                                          np.stack([row(i)[name] for i in range(4)]))


def test_row_writer_buffers_and_flushes_on_error(tmp_path):
    """compare.phase.RowWriter: the first row reaches the store at once, later
    ones at the flush interval and when the block is left, also by an
    exception (the resume keeps them)."""
    from compare.phase import RowWriter
    seen = []
    with SweepStore(tmp_path / "p.zarr", TEMPLATE, "x", SPEC) as st:
        with pytest.raises(KeyboardInterrupt):
            with RowWriter(st, seen.append, flush_seconds=float("inf")) as put:
                put(0, row(0))
                assert st.finished() == [0]  # the first row at once
                put(2, row(2))
                assert st.finished() == [0]  # buffered
                raise KeyboardInterrupt
        assert st.finished() == [0, 2] and seen == [1, 1]
        with RowWriter(st, flush_seconds=0.0) as put:
            put(1, row(1))
            assert st.finished() == [0, 1, 2]  # flushed at once


def test_changed_spec_refused_then_overwrite(tmp_path):
    path = tmp_path / "phase.zarr"
    with SweepStore(path, TEMPLATE, "x", SPEC) as st:
        st.save(0, row(0))
        fp = st.fingerprint
    with pytest.raises(StoreError) as exc:
        SweepStore(path, TEMPLATE, "x", {**spec(eta=0.02), "seeds": 3})
    msg = str(exc.value)
    assert "params.eta: 0.01 -> 0.02" in msg and "seeds: 2 -> 3" in msg
    assert "params.d" not in msg and "--overwrite" in msg and "\n" not in msg
    with SweepStore(path, TEMPLATE, "x", SPEC) as st:  # refusal changed nothing
        assert st.finished() == [0]
    with SweepStore(path, TEMPLATE, "x", spec(eta=0.02), overwrite=True) as st:
        assert st.finished() == []
        assert st.fingerprint != fp
    assert sorted(os.listdir(tmp_path)) == ["phase.zarr", "phase.zarr.lock"]


def test_not_a_store_refused(tmp_path):
    path = tmp_path / "phase.zarr"
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a readable sweep store.*--overwrite"):
        SweepStore(path, TEMPLATE, "x", SPEC)
    with SweepStore(path, TEMPLATE, "x", SPEC, overwrite=True) as st:
        assert st.finished() == []
    assert not (path / "notes.txt").exists()


def test_lock_across_processes(tmp_path):
    path = tmp_path / "phase.zarr"
    st = SweepStore(path, TEMPLATE, "x", SPEC)
    st.save(0, row(0))
    proc = child("""
        import sys

        def attempt(overwrite=False):
            try:
                with SweepStore(PATH, TEMPLATE, "x", SPEC, overwrite=overwrite) as st:
                    print("OK", st.finished(), flush=True)
            except StoreBusy as exc:
                print("BUSY", exc, flush=True)

        attempt()
        attempt(overwrite=True)
        sys.stdin.readline()  # wait for the parent to close its store
        attempt()
    """, path)
    try:
        busy, busy_overwrite = read_line(proc), read_line(proc)
        assert busy.startswith("BUSY") and busy_overwrite.startswith("BUSY"), (busy, busy_overwrite)
        assert "in use" in busy and f"pid {os.getpid()}" in busy and "--out" in busy
        assert st.finished() == [0]  # the overwrite attempt deleted nothing
        st.close()
        proc.stdin.write("closed\n")
        proc.stdin.flush()
        assert read_line(proc) == "OK [0]"
        proc.wait(timeout=30)
    finally:
        st.close()
        stop(proc)
    assert proc.returncode == 0


def test_kill_9_releases_lock_and_keeps_rows(tmp_path):
    path = tmp_path / "phase.zarr"
    proc = child("""
        import time
        st = SweepStore(PATH, TEMPLATE, "x", SPEC)
        st.save(0, row(0))
        print("ready", flush=True)
        time.sleep(60)
    """, path)
    try:
        assert read_line(proc) == "ready"
        with pytest.raises(StoreBusy, match=f"pid {proc.pid}"):
            SweepStore(path, TEMPLATE, "x", SPEC)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode == -signal.SIGKILL
    with SweepStore(path, TEMPLATE, "x", SPEC) as st:
        assert st.finished() == [0]
        st.save(1, row(1))
        assert st.finished() == [0, 1]


def test_kill_9_during_chunk_rewrites_keeps_finished_rows(tmp_path):
    """Rows share a chunk: a kill -9 while another row of it is rewritten over
    and over leaves the finished row's numbers intact (Zarr replaces chunk
    files atomically), and the rewritten row is either unfinished or whole."""
    path = tmp_path / "phase.zarr"
    proc = child("""
        st = SweepStore(PATH, TEMPLATE, "x", SPEC)
        st.save(0, row(0))
        print("ready", flush=True)
        k = 0
        while True:
            st.save(1, row(1 + 10 * (k % 2)))
            k += 1
    """, path)
    try:
        assert read_line(proc) == "ready"
        time.sleep(0.5)  # some dozens of rewrites of the chunk of rows 0-3
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop(proc)
    with SweepStore(path, TEMPLATE, "x", SPEC) as st:
        done = st.finished()
        assert done in ([0], [0, 1])
        st.save_rows({ix: row(ix) for ix in range(4) if ix not in done})
        ds = st.open()
        for name in TEMPLATE.data_vars:
            np.testing.assert_array_equal(ds[name].values[0], row(0)[name])
            if 1 in done:  # the last whole write of row 1
                assert any(np.array_equal(ds[name].values[1], row(k)[name]) for k in (1, 11))


def test_stale_temporaries_removed(tmp_path):
    path = tmp_path / "phase.zarr"
    with SweepStore(path, TEMPLATE, "x", SPEC) as st:
        st.save(0, row(0))
    stale_dir = tmp_path / ".phase.zarr.tmp-0123456789ab"
    (stale_dir / "err").mkdir(parents=True)
    (stale_dir / "err" / "zarr.json").write_text("{}")
    stale_file = tmp_path / ".phase.zarr.tmp-old-x"
    stale_file.write_text("")
    other = tmp_path / ".other.zarr.tmp-1"
    other.mkdir()
    partial = path / "err" / "c" / "1" / "0" / "0.deadbeef.partial"  # zarr's own leftover
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0")
    with SweepStore(path, TEMPLATE, "x", SPEC) as st:
        assert st.finished() == [0]
    assert not stale_dir.exists() and not stale_file.exists() and not partial.exists()
    assert other.exists()


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # zarr's I/O thread
def test_forked_child_does_not_hold_lock(tmp_path):
    path = tmp_path / "phase.zarr"
    st = SweepStore(path, TEMPLATE, "x", SPEC)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report whether it dropped the lock, then stay alive
        os.close(w)
        code = 0 if st._lock_fd is None else 1
        os.read(r, 1)
        os._exit(code)
    os.close(r)
    try:
        st.save(0, row(0))  # the parent keeps its lock and store
        st.close()
        with SweepStore(path, TEMPLATE, "x", SPEC) as st2:  # child still alive
            assert st2.finished() == [0]
    finally:
        os.close(w)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
