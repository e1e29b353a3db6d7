"""Fit one exit head on frozen features: softmax regression (or a one-hidden-layer head) in numpy.

The objective is the mean cross-entropy plus ``weight_decay / 2`` times the squared weights
(biases are not decayed), minimised with scipy's L-BFGS on the training split. After every
iteration the held-out split's cross-entropy is measured; the parameters with the lowest held-out
loss are kept, and the fit stops once that has not improved for ``patience`` iterations (early
stopping). Inputs are standardised per feature for the fit and the scaling is folded back into the
first layer, so the returned weights apply to the raw features. Seeded and deterministic.

Two shapes of head share this code:

* ``linear``: ``z = F @ W.T + b`` on features ``F`` (N, D);
* ``hidden``: ``h = relu(F @ W1.T + b1)`` applied to each of ``P`` cells of ``F`` (N, P, D) with
  shared weights, then ``z = flatten(h) @ W2.T + b2`` where ``flatten`` orders the (hidden unit,
  cell) pairs unit-major, as ONNX ``Flatten`` does on an (N, units, cells...) tensor. ``P = 1``
  is an MLP on (N, D); ``P = g*g`` is a 1x1 convolution on a g x g grid of pooled features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import numpy as np


class _Stop(Exception):
    """Raised from the L-BFGS callback to end the fit early (caught in ``fit_head``)."""


@dataclass
class FittedHead:
    """Weights of a fitted head (raw-feature scale) and how it did on the held-out split."""

    params: Dict[str, np.ndarray]  # "W", "b" (linear) or "W1", "b1", "W2", "b2" (hidden)
    holdout_accuracy: float  # fraction of the held-out split classified correctly
    holdout_loss: float  # mean cross-entropy on the held-out split
    iterations: int  # L-BFGS iterations run (the kept parameters may be from an earlier one)


def _softmax_xent(z: np.ndarray, y: np.ndarray):
    """(mean cross-entropy, d loss / d z) of logits ``z`` (N, K) against labels ``y``."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.mean(np.log(p[np.arange(n), y] + 1e-300))
    p[np.arange(n), y] -= 1.0
    return float(loss), p / n


class _Net:
    """Parameter packing, forward pass and gradient of one head shape."""

    def __init__(self, kind: str, in_dim: int, cells: int, hidden: int, classes: int):
        self.kind, self.cells = kind, cells
        if kind == "linear":
            self.shapes = [("W", (classes, in_dim)), ("b", (classes,))]
        else:
            self.shapes = [("W1", (hidden, in_dim)), ("b1", (hidden,)),
                           ("W2", (classes, hidden * cells)), ("b2", (classes,))]

    def unpack(self, theta: np.ndarray) -> Dict[str, np.ndarray]:
        out, i = {}, 0
        for name, shape in self.shapes:
            size = int(np.prod(shape))
            out[name] = theta[i:i + size].reshape(shape)
            i += size
        return out

    def init(self, rng: np.random.Generator) -> np.ndarray:
        parts = []
        for name, shape in self.shapes:
            if name.startswith("b") or self.kind == "linear":
                parts.append(np.zeros(int(np.prod(shape))))
            else:
                parts.append(rng.normal(0.0, np.sqrt(2.0 / shape[1]), size=shape).ravel())
        return np.concatenate(parts)

    def logits(self, p: Dict[str, np.ndarray], f: np.ndarray):
        """Logits and what the backward pass needs."""
        if self.kind == "linear":
            return f @ p["W"].T + p["b"], None
        n = f.shape[0]
        pre = f.reshape(n * self.cells, -1) @ p["W1"].T + p["b1"]  # (N*P, H)
        h = np.maximum(pre, 0.0)
        flat = h.reshape(n, self.cells, -1).transpose(0, 2, 1).reshape(n, -1)  # unit-major
        return flat @ p["W2"].T + p["b2"], (pre, flat)

    def loss_grad(self, theta: np.ndarray, f: np.ndarray, y: np.ndarray, wd: float):
        p = self.unpack(theta)
        z, cache = self.logits(p, f)
        loss, dz = _softmax_xent(z, y)
        if self.kind == "linear":
            W = p["W"]
            loss += 0.5 * wd * float(np.sum(W * W))
            g = [dz.T @ f + wd * W, dz.sum(axis=0)]
        else:
            pre, flat = cache
            n, units = f.shape[0], p["W1"].shape[0]
            loss += 0.5 * wd * float(np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2))
            dW2 = dz.T @ flat + wd * p["W2"]
            dflat = dz @ p["W2"]  # (N, H*P)
            dh = dflat.reshape(n, units, self.cells).transpose(0, 2, 1).reshape(n * self.cells, units)
            dpre = dh * (pre > 0)
            dW1 = dpre.T @ f.reshape(n * self.cells, -1) + wd * p["W1"]
            g = [dW1, dpre.sum(axis=0), dW2, dz.sum(axis=0)]
        return loss, np.concatenate([a.ravel() for a in g])


def _fold_scaling(params: Dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray) -> Dict[str, np.ndarray]:
    """Weights on standardised inputs ``(F - mean) / std`` -> the same function of raw ``F``."""
    first, bias = ("W", "b") if "W" in params else ("W1", "b1")
    out = dict(params)
    out[first] = params[first] / std
    out[bias] = params[bias] - out[first] @ mean
    return out


def fit_head(f_train: np.ndarray, y_train: np.ndarray, f_hold: np.ndarray, y_hold: np.ndarray,
             classes: int, kind: str = "linear", hidden: int = 32, weight_decay: float = 1e-3,
             max_iter: int = 500, patience: int = 25, seed: int = 0) -> FittedHead:
    """Fit a head on ``f_train`` (N, D) for ``linear``, (N, P, D) for ``hidden``; early-stopped on
    the held-out split. Labels are integers in ``[0, classes)``."""
    from scipy.optimize import minimize

    if kind not in ("linear", "hidden"):
        raise ValueError("unknown head kind %r" % kind)
    cells = 1 if kind == "linear" or f_train.ndim == 2 else f_train.shape[1]
    in_dim = f_train.shape[-1]
    axes = tuple(range(f_train.ndim - 1))
    f64 = f_train.astype(np.float64)
    mean = f64.mean(axis=axes)
    std = f64.std(axis=axes)
    std = np.where(std > 1e-8, std, 1.0)
    ft = (f64 - mean) / std
    fh = (f_hold.astype(np.float64) - mean) / std
    net = _Net(kind, in_dim, cells, hidden, classes)
    rng = np.random.default_rng(seed)
    theta0 = net.init(rng)
    best = {"loss": np.inf, "theta": theta0.copy(), "since": 0, "iters": 0}

    def holdout(theta):
        z, _ = net.logits(net.unpack(theta), fh)
        loss, _ = _softmax_xent(z, y_hold)
        return loss, z

    def callback(theta):
        best["iters"] += 1
        loss, _ = holdout(theta)
        if loss < best["loss"] - 1e-6:
            best.update(loss=loss, theta=theta.copy(), since=0)
        else:
            best["since"] += 1
            if best["since"] >= patience:
                raise _Stop()

    callback(theta0)
    try:
        minimize(net.loss_grad, theta0, args=(ft, y_train, weight_decay), jac=True,
                 method="L-BFGS-B", callback=callback, options={"maxiter": max_iter})
    except _Stop:
        pass
    loss, z = holdout(best["theta"])
    params = _fold_scaling({k: v.copy() for k, v in net.unpack(best["theta"]).items()}, mean, std)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    accuracy = float(np.mean(np.argmax(z, axis=1) == y_hold))
    return FittedHead(params=params, holdout_accuracy=accuracy, holdout_loss=loss,
                      iterations=best["iters"] - 1)


def split_holdout(y: np.ndarray, fraction: float, seed: int) -> List[np.ndarray]:
    """Stratified split of sample indices: [train, held-out], each class contributing
    ``round(fraction * count)`` samples to the held-out part (at least one, and at least one
    left for training); seeded."""
    rng = np.random.default_rng(seed)
    train: List[np.ndarray] = []
    hold: List[np.ndarray] = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        rng.shuffle(idx)
        m = min(len(idx) - 1, max(1, int(round(fraction * len(idx)))))
        hold.append(idx[:m])
        train.append(idx[m:])
    return [np.sort(np.concatenate(train)), np.sort(np.concatenate(hold))]

