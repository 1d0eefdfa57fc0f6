"""Scaling-law forms: the curve, and its log in the parameterisation the optimiser works in.

Fits are done on log residuals log ê − log e (Hoffmann et al. 2022, approach 3; Besiroglu et al. 2024), so
each form exposes `log_predict(theta, x) -> (log ê, d log ê / d theta)` over an internal vector `theta`, plus
the map between `theta` and the public parameters reported to users.

- power:       e = a·N^(−α)                 theta = (log a, α)             (Cherti et al. 2023, log-log)
- saturating:  e = e∞ + a·N^(−α)            theta = (e∞, log a, α)         e∞ ∈ [0, min e), α > 0
- chinchilla:  L = E + A/N^α + B/D^β        theta = (log A, log B, log E, α, β)   x = (N, D), LSE form
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# e∞ must stay strictly below the smallest observed error, else log(e − e∞) of that point is undefined
# in every comparison (N*(τ) for τ near the data) — this keeps a sliver of room.
E_INF_MARGIN = 1e-6
ALPHA_MIN = 1e-8


def power_law(n: np.ndarray, a: float, alpha: float) -> np.ndarray:
    return a * np.asarray(n, dtype=float) ** (-alpha)


def saturating_power_law(n: np.ndarray, e_inf: float, a: float, alpha: float) -> np.ndarray:
    return e_inf + a * np.asarray(n, dtype=float) ** (-alpha)


def chinchilla_loss(n: np.ndarray, d: np.ndarray, E: float, A: float, B: float, alpha: float,
                    beta: float) -> np.ndarray:
    """Hoffmann et al. (2022) eq. 2: L(N, D) = E + A/N^α + B/D^β."""
    return E + A / np.asarray(n, dtype=float) ** alpha + B / np.asarray(d, dtype=float) ** beta


LogPredict = Callable[[np.ndarray, np.ndarray], "tuple[np.ndarray, np.ndarray]"]


@dataclass(frozen=True)
class Form:
    """One functional form: public parameter names, log-prediction with Jacobian, bounds and starts."""

    name: str
    param_names: tuple[str, ...]
    log_predict: LogPredict
    to_params: Callable[[np.ndarray], dict[str, float]]
    from_params: Callable[[dict[str, float]], np.ndarray]
    bounds: Callable[[np.ndarray], list[tuple[float | None, float | None]]]
    starts: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def predict(self, params: dict[str, float], x: np.ndarray) -> np.ndarray:
        log_e, _ = self.log_predict(self.from_params(params), np.asarray(x, dtype=float))
        return np.exp(log_e)


# ---- power: log e = log a − α log N (linear in theta, so the Huber problem is convex) ----

def _power_log_predict(theta: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    log_n = np.log(n)
    jac = np.stack([np.ones_like(log_n), -log_n], axis=1)
    return theta[0] - theta[1] * log_n, jac


def _power_starts(n: np.ndarray, err: np.ndarray) -> np.ndarray:
    slope, icpt = np.polyfit(np.log(n), np.log(err), 1) if len(np.unique(n)) > 1 else (0.0, np.log(err).mean())
    out = [[icpt, -slope]]
    for alpha in (0.05, 0.2, 0.5, 1.0):  # lines through the data centroid with other slopes
        out.append([np.log(err).mean() + alpha * np.log(n).mean(), alpha])
    return np.asarray(out)


POWER = Form(
    name="power",
    param_names=("a", "alpha"),
    log_predict=_power_log_predict,
    to_params=lambda t: {"a": float(np.exp(t[0])), "alpha": float(t[1])},
    from_params=lambda p: np.array([np.log(p["a"]), p["alpha"]]),
    bounds=lambda err: [(None, None), (None, None)],
    starts=_power_starts,
)


# ---- saturating: log e = log(e∞ + exp(log a − α log N)), e∞ kept in linear space so e∞ = 0 is allowed ----

def _saturating_log_predict(theta: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e_inf, log_a, alpha = theta
    log_n = np.log(n)
    log_p = log_a - alpha * log_n
    with np.errstate(divide="ignore"):
        log_e = np.logaddexp(np.log(e_inf) if e_inf > 0 else -np.inf, log_p)
    w = np.exp(log_p - log_e)  # share of the reducible term in the prediction
    jac = np.stack([np.exp(-log_e), w, -w * log_n], axis=1)
    return log_e, jac


def _saturating_bounds(err: np.ndarray) -> list[tuple[float | None, float | None]]:
    return [(0.0, float(np.min(err)) * (1.0 - E_INF_MARGIN)), (None, None), (ALPHA_MIN, None)]


def _saturating_starts(n: np.ndarray, err: np.ndarray) -> np.ndarray:
    log_n = np.log(n)
    out = []
    for frac in (0.0, 0.3, 0.6, 0.9):
        e_inf = frac * float(np.min(err))
        for alpha in (0.1, 0.3, 0.7, 1.5):
            # pick log a so the reducible part passes through the data centroid
            log_a = float(np.mean(np.log(err - e_inf)) + alpha * log_n.mean())
            out.append([e_inf, log_a, alpha])
    return np.asarray(out)


SATURATING = Form(
    name="saturating",
    param_names=("e_inf", "a", "alpha"),
    log_predict=_saturating_log_predict,
    to_params=lambda t: {"e_inf": float(t[0]), "a": float(np.exp(t[1])), "alpha": float(t[2])},
    from_params=lambda p: np.array([p["e_inf"], np.log(p["a"]), p["alpha"]]),
    bounds=_saturating_bounds,
    starts=_saturating_starts,
)


# ---- chinchilla: log L = LSE(a − α log N, b − β log D, e) (Hoffmann et al. 2022, Appendix D.2) ----

def _chinchilla_log_predict(theta: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b, e, alpha, beta = theta
    log_n, log_d = np.log(x[:, 0]), np.log(x[:, 1])
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], axis=1)
    top = terms.max(axis=1, keepdims=True)
    log_l = top[:, 0] + np.log(np.exp(terms - top).sum(axis=1))
    w = np.exp(terms - log_l[:, None])  # softmax weights = d log L / d (a, b, e)
    jac = np.stack([w[:, 0], w[:, 1], w[:, 2], -w[:, 0] * log_n, -w[:, 1] * log_d], axis=1)
    return log_l, jac


def chinchilla_grid(alphas=(0.0, 0.5, 1.0), betas=(0.0, 0.5, 1.0), es=(-1.0, 0.0, 1.0),
                    as_=(0.0, 10.0, 20.0), bs=(0.0, 10.0, 20.0)) -> np.ndarray:
    """Starting points (a, b, e, α, β); a coarse version of Hoffmann et al.'s / Epoch's grid."""
    mesh = np.meshgrid(as_, bs, es, alphas, betas, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


CHINCHILLA = Form(
    name="chinchilla",
    param_names=("A", "B", "E", "alpha", "beta"),
    log_predict=_chinchilla_log_predict,
    to_params=lambda t: {"A": float(np.exp(t[0])), "B": float(np.exp(t[1])), "E": float(np.exp(t[2])),
                         "alpha": float(t[3]), "beta": float(t[4])},
    from_params=lambda p: np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"]]),
    bounds=lambda err: [(None, None)] * 5,
    starts=lambda x, err: chinchilla_grid(),
)

FORMS: dict[str, Form] = {f.name: f for f in (POWER, SATURATING, CHINCHILLA)}


def get_form(name: str) -> Form:
    if name not in FORMS:
        raise ValueError(f"unknown scaling-law form {name!r}; expected one of {sorted(FORMS)}")
    return FORMS[name]
