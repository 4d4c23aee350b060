"""``kernels.threads.run_chunks``: every item runs exactly once whatever the
thread count, and an error in a helper thread reaches the caller."""
import numba
import numpy as np
import pytest
from numba import njit

from dynamics.kernels.threads import run_chunks


@njit(nogil=True)
def _square_plus_count(lo, hi, x, out, calls):
    for q in range(lo, hi):
        out[q] = x[q] * x[q]
        calls[q] += 1


def _fail_on_item(lo, hi, bad):
    if lo <= bad < hi:
        raise ValueError(f"item {bad}")


@pytest.mark.parametrize("n", [0, 1, 2, 7, 64, 1001])
@pytest.mark.parametrize("parallel", [True, False])
def test_each_item_once_same_result(n, parallel):
    x = np.linspace(-3.0, 5.0, n)
    out, calls = np.zeros(n), np.zeros(n, dtype=np.int64)
    run_chunks(_square_plus_count, n, (x, out, calls), parallel)
    np.testing.assert_array_equal(out, x * x)
    np.testing.assert_array_equal(calls, np.ones(n, dtype=np.int64))


def test_one_thread_when_numba_has_one():
    before = numba.get_num_threads()
    seen = set()

    def record(lo, hi):
        import threading
        seen.add(threading.get_ident())
    numba.set_num_threads(1)
    try:
        run_chunks(record, 50, (), True)
    finally:
        numba.set_num_threads(before)
    assert len(seen) == 1


def test_error_in_a_chunk_is_raised():
    with pytest.raises(ValueError, match="item 40"):
        run_chunks(_fail_on_item, 64, (40,), True)
