"""A script-style PyTorch implementation of the two-patch CNN of Cao et al. 2022
("Benign overfitting in two-layer convolutional neural networks"), written the
way a researcher would: two ``nn.Linear`` filter banks (one per class),
activation relu(x)**q, output F_j = (1/m) sum_r sum_p sigma(<w_{j,r}, x^(p)>)
(a fixed second layer), ``CrossEntropyLoss`` on the logits (F_{+1}, F_{-1}),
full-batch ``torch.optim.SGD``, float64.  It logs <w_{j,r}, mu> and
<w_{j,r}, xi_i> at every step, the quantities that paper's analysis tracks.

Used by tests/equivalence/test_family.py as an independent reference for the general
level of ``dyn``; not imported by the package.  Run directly, it writes a data
file for ``dyn compare --data``:  python tests/torch_cao2022.py out.npz
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn


def make_data(n=16, d=400, mu_norm=4.0, sigma_p=1.0, seed=0):
    """Cao et al.'s data: x = [y mu, xi], mu = ||mu|| e_1, xi ~ N(0, sigma_p^2 I)
    (isotropic: keeps its component along mu), labels in {0, 1}."""
    g = np.random.default_rng(seed)
    y01 = g.integers(0, 2, size=n)
    y = 2.0 * y01 - 1.0
    mu = np.zeros(d)
    mu[0] = mu_norm
    xi = sigma_p * g.standard_normal((n, d))
    x = np.stack([y[:, None] * mu[None, :], xi], axis=1)  # (n, 2, d)
    return x, y01, mu, xi


class TwoPatchCNN(nn.Module):
    def __init__(self, d, m, q, sigma_0, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.m, self.q = m, q
        self.pos = nn.Linear(d, m, bias=False, dtype=torch.float64)
        self.neg = nn.Linear(d, m, bias=False, dtype=torch.float64)
        for layer in (self.pos, self.neg):
            nn.init.normal_(layer.weight, std=sigma_0)

    def forward(self, x):  # x (n, 2, d) -> logits (n, 2) = (F_{+1}, F_{-1})
        act = lambda h: torch.relu(h) ** self.q  # noqa: E731
        f_pos = act(self.pos(x)).sum(dim=(1, 2)) / self.m
        f_neg = act(self.neg(x)).sum(dim=(1, 2)) / self.m
        return torch.stack([f_pos, f_neg], dim=1)


def train(x, y01, mu, xi, m=10, q=3.0, sigma_0=0.05, lr=0.5, steps=60, seed=0):
    """Train; returns (w0 (2, m, d), <w, mu> (T+1, 2, m), <w, xi_i> (T+1, 2, m, n),
    losses (T+1,))."""
    d = x.shape[-1]
    model = TwoPatchCNN(d, m, q, sigma_0, seed)
    w0 = np.stack([model.pos.weight.detach().numpy().copy(),
                   model.neg.weight.detach().numpy().copy()])
    X = torch.tensor(x)
    # class 0 = label +1 (logit F_{+1}), class 1 = label -1
    target = torch.tensor(1 - y01, dtype=torch.long)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    log_mu, log_xi, losses = [], [], []
    Mu, Xi = torch.tensor(mu), torch.tensor(xi)
    for _ in range(steps + 1):
        with torch.no_grad():
            W = torch.stack([model.pos.weight, model.neg.weight])
            log_mu.append((W @ Mu).numpy().copy())
            log_xi.append((W @ Xi.T).numpy().copy())
        opt.zero_grad()
        loss = loss_fn(model(X), target)
        losses.append(loss.item())
        if len(losses) == steps + 1:
            break
        loss.backward()
        opt.step()
    return w0, np.array(log_mu), np.array(log_xi), np.array(losses)


def write_file(path, n=16, d=400, m=10, seed=0, **kw):
    """Draw the data, train, and write x, y (0/1), w0, v0 = 1/m to ``path``;
    returns the logs of ``train``."""
    x, y01, mu, xi = make_data(n, d, seed=seed)
    w0, log_mu, log_xi, losses = train(x, y01, mu, xi, m=m, seed=seed, **kw)
    np.savez(path, x=x, y=y01, w0=w0, v0=np.float64(1.0 / m))
    return dict(w0=w0, mu=mu, log_mu=log_mu, log_xi=log_xi, losses=losses)


if __name__ == "__main__":
    write_file(sys.argv[1] if len(sys.argv) > 1 else "cao2022.npz")
