"""Data and sufficient statistics (docs/theory.md#data, #d-free-sampler, #test-error).

The dynamics and the test error depend on the data only through inner products
among {mu, w_{j,r}(0), xi_i} (and fresh test noise).  Two samplers produce them:

* ``data``: draws the real vectors (mu = ||mu|| e_1, W0, xi, labels) and
  computes the inner products; the weight-space network uses the same vectors.
* ``wishart``: the exact d-free Bartlett sampler.  With
  w(0) = sigma_0 (a e_1 + u) and xi = sigma_p g, the Gram of the K = 2m + n
  vectors {u, g} is Wishart_K(d-1, I) = L L^T, L lower triangular with
  L_kk^2 ~ chi^2_{d-1-k} (k = 0..K-1) and N(0,1) below the diagonal.
  Cost O(K^3), independent of d.

Randomness: ``SeedSequence(seed).spawn(4)`` gives independent streams for
(labels, initial filters, noise, test set), so both samplers draw the same
labels at the same seed, and nothing depends on ||mu|| (common random numbers
across ||mu||: A = ||mu|| <w0, e_1>).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .params import Params, ParamError

# Row chunk used when generating real test vectors (bounded memory).
_TEST_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Stats:
    """Sufficient statistics of one data realisation (float64 arrays).

    w0_e1  (2, m)      <w_{j,r}(0), e_1>, so A = ||mu|| * w0_e1
    w0_perp_sq (2, m)  ||P w_{j,r}(0)||^2 (P projects out e_1)
    B      (2, m, n)   <w_{j,r}(0), xi_i>
    gram   (n, n)      <xi_k, xi_i>
    yhat, y (n,)       clean and observed training labels (+-1.0)
    test_yhat (nt,)    clean labels of the test points
    test_B (2, m, nt)  <w_{j,r}(0), xi_test>
    test_X (n, nt)     <xi_k, xi_test>
    U0     (L-1, 2, m, m) initial upper layers, U0[l, j, k, r] from neuron r of
                       hidden layer l+1 to neuron k of layer l+2 (empty for L = 1)
    """

    w0_e1: np.ndarray
    w0_perp_sq: np.ndarray
    B: np.ndarray
    gram: np.ndarray
    yhat: np.ndarray
    y: np.ndarray
    test_yhat: np.ndarray
    test_B: np.ndarray
    test_X: np.ndarray
    U0: np.ndarray

    @property
    def N(self) -> np.ndarray:
        """N_i = ||xi_i||^2."""
        return np.ascontiguousarray(np.diag(self.gram))

    @property
    def G(self) -> np.ndarray:
        """G_{k,i} = <xi_k, xi_i> / ||xi_k||^2 (so G_ii = 1)."""
        return np.ascontiguousarray(self.gram / self.N[:, None])


@dataclass(frozen=True)
class Realisation:
    """Real vectors of one draw (sampler ``data``) with their statistics."""

    mu: np.ndarray  # (d,)
    W0: np.ndarray  # (2, m, d)
    xi: np.ndarray  # (n, d)
    stats: Stats
    test_seed: np.random.SeedSequence  # regenerates the real test vectors
    spikes: np.ndarray | None = None  # (K, d) shared directions ('spiked' noise)

    def test_vectors(self, params: Params):
        """Yield (slice, xi_test chunk) of the real test noise, in order."""
        return _test_noise_chunks(params, self.test_seed, self.spikes)


def seed_streams(seed: int):
    """Independent child seeds for (labels, init, noise, test).  The fifth
    child of the same SeedSequence draws the shared directions of 'spiked'
    noise (``spike_directions``)."""
    return np.random.SeedSequence(seed).spawn(4)


def spike_directions(params: Params) -> np.ndarray | None:
    """K orthonormal directions orthogonal to e_1 (rows), for 'spiked:K,BETA'."""
    kind, args = params.noise_spec
    if kind != "spiked":
        return None
    K = args[0]
    if K > params.d - 1:
        raise ParamError("noise", params.noise, f"needs K <= d - 1 = {params.d - 1}")
    rng = np.random.default_rng(np.random.SeedSequence(params.seed).spawn(5)[4])
    Z = rng.standard_normal((params.d - 1, K))
    Q, _ = np.linalg.qr(Z)
    U = np.zeros((K, params.d))
    U[:, 1:] = Q.T
    return U


def upper_layers(params: Params) -> np.ndarray:
    """Initial upper layers U(l) (docs/theory.md#depth): (L-1, 2, m, m) entries ~ N(0, sigma_u^2),
    from the sixth child of the seed's SeedSequence (so L = 1 draws nothing and
    every other stream is unchanged); the same for both samplers (d-free)."""
    p = params
    shape = (p.depth - 1, 2, p.m, p.m)
    if p.depth == 1:
        return np.zeros(shape)
    check_memory(8.0 * np.prod(shape), f"upper layers at depth={p.depth}, m={p.m}")
    rng = np.random.default_rng(np.random.SeedSequence(p.seed).spawn(6)[5])
    return p.sigma_u_eff * rng.standard_normal(shape)


def noise_vectors(params: Params, rng: np.random.Generator, rows: int,
                  spikes: np.ndarray | None = None,
                  signal: np.ndarray | None = None) -> np.ndarray:
    """(rows, d) noise vectors of the law ``params.noise``, projected out of the
    signal direction (``signal``, unit; None = e_1) when params.noise_model is
    'projected' (the paper), kept whole when 'isotropic' (docs/theory.md#general-reduction).

    gaussian: sigma_p g; ar1:KAPPA: stationary AR(1) along coordinates
    (covariance sigma_p^2 S, S_ab = KAPPA^|a-b|); spiked:K,BETA: sigma_p (g +
    sqrt(BETA) U^T c), c ~ N(0, I_K) (covariance sigma_p^2 (I + BETA U^T U));
    rademacher: sigma_p * (+-1); student-t:NU: sigma_p t_NU sqrt((NU-2)/NU).
    All entries have variance sigma_p^2 (plus BETA along the spikes); the
    first coordinate (the mu direction) is then set to 0 (the projection P).
    """
    kind, args = params.noise_spec
    d, sp = params.d, params.sigma_p
    if kind == "gaussian":
        x = rng.standard_normal((rows, d))
    elif kind == "ar1":
        from scipy.signal import lfilter
        kappa = args[0]
        e = rng.standard_normal((rows, d))
        b = np.sqrt(1.0 - kappa**2)
        x = lfilter([b], [1.0, -kappa], e, axis=1, zi=(1.0 - b) * e[:, :1])[0]
    elif kind == "spiked":
        x = rng.standard_normal((rows, d))
        x += np.sqrt(args[1]) * rng.standard_normal((rows, spikes.shape[0])) @ spikes
    elif kind == "rademacher":
        x = rng.integers(0, 2, size=(rows, d)).astype(np.float64) * 2.0 - 1.0
    elif kind == "student-t":
        nu = args[0]
        x = rng.standard_t(nu, size=(rows, d)) * np.sqrt((nu - 2.0) / nu)
    else:  # pragma: no cover - Params validated the kind
        raise ValueError(kind)
    x *= sp
    if params.noise_model == "projected":
        if signal is None:
            x[:, 0] = 0.0
        else:
            x -= np.outer(x @ signal, signal)
    return x


def draw_labels(params: Params, ss: np.random.SeedSequence):
    """Rademacher clean labels yhat; observed y flipped with prob. ``flip``."""
    rng = np.random.default_rng(ss)
    yhat = rng.integers(0, 2, size=params.n).astype(np.float64) * 2.0 - 1.0
    flips = rng.random(params.n) < params.flip
    y = np.where(flips, -yhat, yhat)
    return yhat, y


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (falls back to physical memory)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(nbytes: float, what: str, limit: float | None = None,
                 hint: str = "lower d (or n, m), or use the d-free sampler 'wishart' "
                             "with a reduced level"):
    """Refuse work whose arrays would not fit (80% of available memory)."""
    limit = 0.8 * available_memory_bytes() if limit is None else limit
    if nbytes > limit:
        raise MemoryError(
            f"{what} needs about {nbytes / 2**30:.2f} GiB of arrays but only "
            f"{limit / 2**30:.2f} GiB may be used; {hint}"
        )


def check_test_memory(params: Params):
    """Guard for the test-set statistics (2m + n + 2m + n numbers per test point)."""
    check_memory(8.0 * params.n_test * 2 * (2 * params.m + params.n),
                 f"--n-test {params.n_test}", hint="lower --n-test")


def data_bytes(params: Params) -> float:
    """Bytes of the real vectors (W0, xi, one test chunk)."""
    return 8.0 * (2 * params.m + params.n + 1) * params.d + _TEST_CHUNK_BYTES


def _test_noise_chunks(params: Params, ss: np.random.SeedSequence, spikes=None,
                       signal=None):
    rng = np.random.default_rng(ss)
    rng.integers(0, 2, size=params.n_test)  # labels come first in this stream
    rows = max(1, _TEST_CHUNK_BYTES // (8 * params.d))
    for start in range(0, params.n_test, rows):
        stop = min(params.n_test, start + rows)
        yield slice(start, stop), noise_vectors(params, rng, stop - start, spikes, signal)


def _test_labels(params: Params, ss: np.random.SeedSequence) -> np.ndarray:
    rng = np.random.default_rng(ss)
    return rng.integers(0, 2, size=params.n_test).astype(np.float64) * 2.0 - 1.0


def check_sampler(params: Params, sampler: str):
    """The sampler's constraints on (n, d, m, noise), as ParamError naming the field."""
    p = params
    if sampler == "data" and p.n > p.d - 1:
        raise ParamError("n", p.n, f"sampler 'data' needs n <= d - 1 = {p.d - 1} "
                         "(the noise vectors must be linearly independent)")
    if sampler == "wishart":
        if p.noise != "gaussian":
            raise ParamError("sampler", "wishart", f"the d-free sampler holds only for "
                             f"gaussian noise (noise={p.noise}); use sampler 'data'")
        if p.d - 1 < 2 * p.m + p.n:
            raise ParamError("d", p.d, f"sampler 'wishart' needs d - 1 >= 2m + n = "
                             f"{2 * p.m + p.n}")


def sample_data(params: Params) -> Realisation:
    """Draw real vectors and compute their sufficient statistics."""
    p = params
    check_sampler(p, "data")
    check_memory(data_bytes(p), f"sampler 'data' at d={p.d}")
    check_test_memory(p)
    s_lab, s_init, s_noise, s_test = seed_streams(p.seed)
    yhat, y = draw_labels(p, s_lab)
    W0 = p.sigma_0 * np.random.default_rng(s_init).standard_normal((2, p.m, p.d))
    spikes = spike_directions(p)
    xi = noise_vectors(p, np.random.default_rng(s_noise), p.n, spikes)
    mu = np.zeros(p.d)
    mu[0] = p.mu_norm
    W0f = W0.reshape(2 * p.m, p.d)
    test_B = np.empty((2 * p.m, p.n_test))
    test_X = np.empty((p.n, p.n_test))
    for sl, chunk in _test_noise_chunks(p, s_test, spikes):
        test_B[:, sl] = W0f @ chunk.T
        test_X[:, sl] = xi @ chunk.T
    stats = Stats(
        w0_e1=W0[..., 0].copy(),
        w0_perp_sq=np.einsum("jrd,jrd->jr", W0[..., 1:], W0[..., 1:]),
        B=(W0f @ xi.T).reshape(2, p.m, p.n),
        gram=xi @ xi.T,
        yhat=yhat,
        y=y,
        test_yhat=_test_labels(p, s_test),
        test_B=test_B.reshape(2, p.m, p.n_test),
        test_X=test_X,
        U0=upper_layers(p),
    )
    return Realisation(mu=mu, W0=W0, xi=xi, stats=stats, test_seed=s_test, spikes=spikes)


def bartlett_factor(dof: int, K: int, rng: np.random.Generator) -> np.ndarray:
    """Lower-triangular L with L L^T ~ Wishart_K(dof, I) (Bartlett)."""
    if dof < K:
        raise ValueError(f"Bartlett needs dof >= K, got dof={dof}, K={K}")
    L = np.tril(rng.standard_normal((K, K)), -1)
    L[np.diag_indices(K)] = np.sqrt(rng.chisquare(dof - np.arange(K)))
    return L


def stats_from_factor(params: Params, w0_e1, Lw, Lx, yhat, y, s_test) -> Stats:
    """Statistics from coordinates in an orthonormal basis of the span.

    Lw (2m, D): rows are P w_{j,r}(0); Lx (n, D): rows are xi_i.  A fresh
    xi has coordinates sigma_p * eps, eps ~ N(0, I_D), on that span (the rest
    is orthogonal to every filter at every step), so the test inner products
    are exactly Gaussian: <P w0, xi> = sigma_p Lw eps, <xi_k, xi> = sigma_p Lx eps.
    """
    p = params
    rng = np.random.default_rng(s_test)
    test_yhat = rng.integers(0, 2, size=p.n_test).astype(np.float64) * 2.0 - 1.0
    eps = p.sigma_p * rng.standard_normal((p.n_test, Lw.shape[1]))
    return Stats(
        w0_e1=w0_e1,
        w0_perp_sq=np.einsum("kd,kd->k", Lw, Lw).reshape(2, p.m),
        B=(Lw @ Lx.T).reshape(2, p.m, p.n),
        gram=Lx @ Lx.T,
        yhat=yhat,
        y=y,
        test_yhat=test_yhat,
        test_B=(Lw @ eps.T).reshape(2, p.m, p.n_test),
        test_X=Lx @ eps.T,
        U0=upper_layers(p),
    )


def sample_wishart(params: Params) -> Stats:
    """Exact d-free sampler of the statistics (Bartlett decomposition)."""
    p = params
    K = 2 * p.m + p.n
    check_sampler(p, "wishart")
    check_test_memory(p)
    s_lab, s_init, s_noise, s_test = seed_streams(p.seed)
    yhat, y = draw_labels(p, s_lab)
    w0_e1 = p.sigma_0 * np.random.default_rng(s_init).standard_normal((2, p.m))
    L = bartlett_factor(p.d - 1, K, np.random.default_rng(s_noise))
    Lw = p.sigma_0 * L[: 2 * p.m]
    Lx = p.sigma_p * L[2 * p.m:]
    return stats_from_factor(p, w0_e1, Lw, Lx, yhat, y, s_test)


def sample_stats(params: Params, sampler: str) -> Stats:
    """Statistics from the named sampler ('data' or 'wishart')."""
    if sampler == "data":
        return sample_data(params).stats
    if sampler == "wishart":
        return sample_wishart(params)
    raise ParamError("sampler", sampler, "must be one of data, wishart")
