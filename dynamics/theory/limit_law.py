"""The idealised limit program in closed form (sympy; docs: time and the limit).

Idealised pattern: per class k (n_k samples) one filter whose signal unit is
active on class k and whose noise unit is active exactly on class k; noise
vectors orthogonal with ||xi||^2 = sigma_p^2 d (their typical Gram).  The
max-margin network then fits each class either

* with the signal: u^S c ||mu|| >= 1, cost  1/(c ||mu||);
* by memorising it: <u^N, xi_i> c >= 1 for i in class k, cost
  min ||u^N|| = sqrt(n_k) / (c sigma_p sqrt(d))  (u^N = sum_i xi_i / (c N_i)),

whichever is cheaper, so OPT = sum_k min(signal, memorise).  A class uses the
signal iff ||mu|| > sigma_p sqrt(d / n_k); its test points are then right,
otherwise a coin flip (an unsupported point is a tie f = 0 or gets a random
sign).  With balanced classes, n_k = n/2, the limit's test error jumps from
1/2 to 0 at ``mu* = sigma_p sqrt(2 d / n)``, v0-independent, with exponents
d^(1/2) n^(-1/2).
"""
from __future__ import annotations

import sympy as sp


def idealised_limit() -> dict:
    """Sympy expressions: costs (signal, memorise) of one class, OPT and the
    threshold mu* of class k, and mu* with balanced classes (n_k = n/2)."""
    mu, c, sp_, d, nk, n = sp.symbols("mu c sigma_p d n_k n", positive=True)
    signal = 1 / (c * mu)
    memorise = sp.sqrt(nk) / (c * sp_ * sp.sqrt(d))
    star = sp.solve(sp.Eq(signal, memorise), mu)[0]
    return {"symbols": dict(mu=mu, c=c, sigma_p=sp_, d=d, n_k=nk, n=n),
            "signal_cost": signal, "memorise_cost": memorise,
            "opt_class": sp.Min(signal, memorise), "mu_star_class": sp.simplify(star),
            "mu_star": sp.simplify(star.subs(nk, n / 2))}


def idealised_mu_star(n: int, d: int, sigma_p: float, n_class: float | None = None) -> float:
    """mu* of the idealised program (numbers): sigma_p sqrt(d / n_k), n_k = n/2
    by default."""
    law = idealised_limit()
    s = law["symbols"]
    nk = n / 2 if n_class is None else n_class
    return float(law["mu_star_class"].subs({s["sigma_p"]: sigma_p, s["d"]: d, s["n_k"]: nk}))


def idealised_exponents() -> dict:
    """Exponents of d and n in mu* = sigma_p sqrt(2 d / n) (read off sympy)."""
    law = idealised_limit()
    s = law["symbols"]
    expr = law["mu_star"]
    return {name: float(sp.simplify(s[name] * sp.diff(expr, s[name]) / expr))
            for name in ("d", "n", "sigma_p")}
