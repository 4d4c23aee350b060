"""Plain helpers shared by test modules (fixtures live in conftest.py).
pytest puts this folder on sys.path (it holds conftest.py), so test modules
import it as ``helpers``."""
import signal


def default_signals():
    """In a child before exec (``preexec_fn``): SIGINT and SIGTERM at their
    defaults, also when this test run inherited them ignored (a background
    job of a non-interactive shell ignores SIGINT), so the child's Python and
    dyn install their own handlers."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
