"""The network's forward pass and gradients (docs/theory.md#network-and-training,
#depth): plain numpy/BLAS on W (2, m, d), U (L-1, 2, m, m), V (2, m, 2).
Depth 1 runs ``gradients`` (the paper's network); depth L >= 2 runs
``gradients_deep``; ``network_gradients`` chooses.
"""
from __future__ import annotations

import numpy as np

from dynamics.run import error_count

JS = np.array([1.0, -1.0])  # the class signs j = +1, -1


# ---------------------------------------------------------------- depth 1
def forward(W, V, mu, xi, yhat, c):
    """Pre-activations s = <w, yhat mu> (2,m,n), z = <w, xi> (2,m,n), output f (n,)."""
    m, d = W.shape[1], W.shape[2]
    s = (W @ mu)[..., None] * yhat[None, None, :]
    z = (W.reshape(2 * m, d) @ xi.T).reshape(2, m, -1)
    out = V[..., 0:1] * np.maximum(s, 0.0) + V[..., 1:2] * np.maximum(z, 0.0)
    f = c * np.einsum("j,jri->i", JS, out)
    return s, z, f


def gradients(W, V, mu, xi, yhat, y, c):
    """Loss, training error, output f and the gradients (gW, gV) (depth 1).

    dL/dw_{j,r} = (c/n) j sum_i l'_i y_i [v1 1[s>0] yhat_i mu + v2 1[z>0] xi_i]
    dL/dv_{j,r,p} = (c/n) j sum_i l'_i y_i ReLU(<w_{j,r}, x_i^(p)>)
    """
    n = y.shape[0]
    m, d = W.shape[1], W.shape[2]
    s, z, f = forward(W, V, mu, xi, yhat, c)
    yf = y * f
    loss = float(np.mean(np.logaddexp(0.0, -yf)))
    lp = -np.exp(-np.logaddexp(0.0, yf))  # -1/(1 + exp(yf))
    q = (c / n) * lp * y  # (n,)
    jq = JS[:, None, None] * q[None, None, :]
    sig = np.einsum("jri,i->jr", jq * (s > 0), yhat)  # sum_i ... yhat_i 1[s>0]
    gW = (V[..., 0] * sig)[..., None] * mu[None, None, :]
    gW += ((jq * (z > 0)) * V[..., 1:2]).reshape(2 * m, n).dot(xi).reshape(2, m, d)
    gV = np.stack([np.sum(jq * np.maximum(s, 0.0), axis=-1),
                   np.sum(jq * np.maximum(z, 0.0), axis=-1)], axis=-1)
    return loss, error_count(yf) / n, f, gW, gV


# ---------------------------------------------------------------- depth L >= 2
def forward_deep(W, U, V, mu, xi, yhat, c, keep: bool = True):
    """Pre-activations of every hidden layer and the output (docs/theory.md#depth).

    pre (L, 2, m, 2, n): pre[l, j, k, p, i] is the pre-activation of neuron k
    of hidden layer l+1 of class j at patch p (0 signal yhat_i mu, 1 noise
    xi_i) of sample i; pre[0] = <w, x^(p)>, pre[l+1] = U[l]_j ReLU(pre[l]).
    f (n,) = c sum_j j sum_{k,p} v_{j,k,p} ReLU(pre[L-1, j, k, p, i]).
    ``keep=False`` returns only the top layer (shape (1, 2, m, 2, n)).
    Works at any depth (U of shape (0, 2, m, m) at depth 1).
    """
    L = U.shape[0] + 1
    m, d = W.shape[1], W.shape[2]
    n = xi.shape[0]
    pre = np.empty((L if keep else 1, 2, m, 2, n))
    cur = pre[0]
    cur[:, :, 0, :] = (W @ mu)[..., None] * yhat
    cur[:, :, 1, :] = (W.reshape(2 * m, d) @ xi.T).reshape(2, m, n)
    for l in range(L - 1):
        h = np.maximum(cur, 0.0).reshape(2, m, 2 * n)
        nxt = pre[l + 1] if keep else np.empty_like(cur)
        np.matmul(U[l], h, out=nxt.reshape(2, m, 2 * n))
        cur = nxt
    top = np.maximum(cur, 0.0)
    f = c * (np.einsum("kp,kpi->i", V[0], top[0]) - np.einsum("kp,kpi->i", V[1], top[1]))
    return (pre if keep else cur[None]), f


def gradients_deep(W, U, V, mu, xi, yhat, y, c):
    """Loss, training error, f and the gradients (gW, gU, gV) at any depth
    (backpropagation through the layers of ``forward_deep``).

    With q_i = (c/n) l'_i y_i and delta = dL/dpre (2, m, 2, n) per layer:
    delta[L-1] = j q v 1[pre > 0], delta[l] = (U[l]^T delta[l+1]) 1[pre[l] > 0];
    gU[l]_j = delta[l+1]_j ReLU(pre[l])_j^T (summed over patches and samples),
    gV_{j,k,p} = j sum_i q_i ReLU(pre[L-1])_{j,k,p,i},
    gW_{j,r} = sum_i delta[0]_{j,r,0,i} yhat_i mu + sum_i delta[0]_{j,r,1,i} xi_i.
    """
    n = y.shape[0]
    L = U.shape[0] + 1
    m, d = W.shape[1], W.shape[2]
    pre, f = forward_deep(W, U, V, mu, xi, yhat, c)
    yf = y * f
    loss = float(np.mean(np.logaddexp(0.0, -yf)))
    lp = -np.exp(-np.logaddexp(0.0, yf))  # -1/(1 + exp(yf))
    q = (c / n) * lp * y  # (n,)
    top = np.maximum(pre[L - 1], 0.0)
    gV = JS[:, None, None] * (top @ q)
    delta = (JS[:, None, None, None] * V[..., None] * q) * (pre[L - 1] > 0)
    gU = np.empty_like(U)
    for l in range(L - 2, -1, -1):
        D = delta.reshape(2, m, 2 * n)
        h = np.maximum(pre[l], 0.0).reshape(2, m, 2 * n)
        np.matmul(D, h.transpose(0, 2, 1), out=gU[l])
        delta = np.matmul(U[l].transpose(0, 2, 1), D).reshape(2, m, 2, n) * (pre[l] > 0)
    gW = (delta[:, :, 0, :] @ yhat)[..., None] * mu
    gW += (delta[:, :, 1, :].reshape(2 * m, n) @ xi).reshape(2, m, d)
    return loss, error_count(yf) / yf.size, f, gW, gU, gV


def network_gradients(W, U, V, mu, xi, yhat, y, c):
    """(loss, train error, f, gW, gU, gV) at any depth: depth 1 (U empty) is
    ``gradients`` itself (bit for bit) with gU = None."""
    if U.shape[0] == 0:
        loss, err, f, gW, gV = gradients(W, V, mu, xi, yhat, y, c)
        return loss, err, f, gW, None, gV
    return gradients_deep(W, U, V, mu, xi, yhat, y, c)
