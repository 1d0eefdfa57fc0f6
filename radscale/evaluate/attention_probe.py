"""Attention-pooling probe on frozen patch tokens: learned-query cross-attention + a linear multi-label head.

One probe per label set (findings, tubes): `n_queries` learned queries attend over the LayerNorm'd patch tokens
(multi-head cross-attention, the "attentive probe" of V-JEPA, Bardes et al. 2024, and AIM, El-Nouby et al. 2024);
the pooled vectors, concatenated and LayerNorm'd, feed one linear logit per label. A pooled token can weight the
few patches where a small finding or a tube tip sits, which a mean-pooled linear probe cannot.

Training mirrors the linear probe (probes.py): targets from `label_targets` (uncertain/unmentioned policy; NaN
entries add no loss), class-balanced BCE per label (sklearn's class_weight="balanced": weight n / (2·n_class)),
labels kept only if probe_train and probe_val each hold both classes; AdamW, and the epoch with the best
probe_val macro AUROC is kept (early stop after `patience` epochs without gain). Rows use the task name
"<task>:attention" so the report gives the probe its own sections.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from radscale.config.specs import EvalSpec
from radscale.data.vocab import Vocabulary
from radscale.evaluate.classification import domain_rows, task_labels
from radscale.evaluate.metrics import auroc
from radscale.evaluate.probes import label_targets

# Queries start at the scale of LayerNorm'd tokens: with V-JEPA's 0.02 the attention starts uniform (= mean
# pooling) and, on a few hundred images, sits on that plateau for tens of epochs before it specialises.
QUERY_INIT_STD = 1.0


class AttentionPoolHead(nn.Module):
    """tokens [B, P, D] -> logits [B, L]."""

    def __init__(self, dim: int, n_labels: int, heads: int = 4, n_queries: int = 1):
        super().__init__()
        heads = heads if dim % heads == 0 else 1
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Parameter(torch.randn(n_queries, dim) * QUERY_INIT_STD)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out_norm = nn.LayerNorm(n_queries * dim)
        self.head = nn.Linear(n_queries * dim, n_labels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(tokens)
        q = self.query.unsqueeze(0).expand(x.shape[0], -1, -1)
        pooled, _ = self.attn(q, x, x, need_weights=False)
        return self.head(self.out_norm(pooled.flatten(1)))


@dataclass(frozen=True)
class AttentionProbe:
    head: AttentionPoolHead
    labels: tuple[str, ...]
    best_epoch: int
    val_auroc: tuple[float, ...]        # probe_val macro AUROC per epoch

    @torch.no_grad()
    def score(self, tokens: np.ndarray, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
        """Logits [N, L] (float32) for tokens [N, P, D] (any float dtype)."""
        self.head.eval().to(device)
        out = [self.head(_tensor(tokens[i:i + batch_size], device)).float().cpu().numpy()
               for i in range(0, len(tokens), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)


def _tensor(x: np.ndarray, device: str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, np.float32), device=device)


def _macro_auroc(y: np.ndarray, s: np.ndarray) -> float:
    vals = []
    for j in range(y.shape[1]):
        ok = np.isfinite(y[:, j])
        vals.append(auroc(y[ok, j], s[ok, j]))
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-entry BCE weights [N, L]: n / (2·n_class) per label over its usable rows; 0 where y is NaN."""
    usable = np.isfinite(y)
    n = usable.sum(0)
    pos = np.where(usable, y == 1, False).sum(0)
    neg = n - pos
    w_pos, w_neg = n / (2.0 * np.maximum(pos, 1)), n / (2.0 * np.maximum(neg, 1))
    return np.where(usable, np.where(y == 1, w_pos, w_neg), 0.0).astype(np.float32)


def fit_attention_probe(labels: list[str], train_tokens: np.ndarray, y_train: np.ndarray, val_tokens: np.ndarray,
                        y_val: np.ndarray, *, epochs: int = 30, lr: float = 3e-3, weight_decay: float = 0.01,
                        heads: int = 4, n_queries: int = 1, batch_size: int = 32, patience: int = 10, seed: int = 0,
                        device: str = "cpu") -> AttentionProbe | None:
    """Targets [N, L] float (1/0/NaN); labels lacking a class in probe_train or probe_val are dropped first.
    None when no label is left."""
    def both(y):
        return [(np.sum(y[:, j] == 1) > 0) and (np.sum(y[:, j] == 0) > 0) for j in range(y.shape[1])]
    keep = [j for j, (a, b) in enumerate(zip(both(y_train), both(y_val))) if a and b]
    if not keep or len(train_tokens) == 0:
        return None
    y_tr, y_va = y_train[:, keep], y_val[:, keep]
    w_tr = balanced_weights(y_tr)
    with torch.random.fork_rng(devices=[]):          # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        head = AttentionPoolHead(train_tokens.shape[-1], len(keep), heads, n_queries).to(device)
    probe = AttentionProbe(head, tuple(labels[j] for j in keep), 0, ())
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    best, best_state, best_epoch, history = -np.inf, copy.deepcopy(head.state_dict()), 0, []
    for epoch in range(1, epochs + 1):
        head.train()
        for idx in np.array_split(rng.permutation(len(train_tokens)), max(1, len(train_tokens) // batch_size)):
            idx = np.sort(idx)                       # sorted reads are cheaper on memory-mapped token arrays
            logits = head(_tensor(train_tokens[idx], device))
            target = torch.as_tensor(np.nan_to_num(y_tr[idx]), dtype=torch.float32, device=device)
            weight = torch.as_tensor(w_tr[idx], device=device)
            loss = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() \
                / weight.sum().clamp(min=1e-6)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        score = _macro_auroc(y_va, probe.score(val_tokens, device=device))
        history.append(score)
        if np.isfinite(score) and score > best:
            best, best_state, best_epoch = score, copy.deepcopy(head.state_dict()), epoch
        elif epoch - best_epoch >= patience:
            break
    head.load_state_dict(best_state)
    head.eval()
    return AttentionProbe(head, probe.labels, best_epoch, tuple(history))


def evaluate_attention_probes(tokens: np.ndarray, meta: pd.DataFrame, spec: EvalSpec, vocabulary: Vocabulary,
                              device: str = "cpu") -> pd.DataFrame:
    """Rows task="<task>:attention" for each task in `spec.tasks`; columns and CIs as evaluate_classification
    (probe fitted on in-domain probe_train/probe_val, tested on every domain's test rows)."""
    split, domain = meta["split"].to_numpy(), meta["domain"].to_numpy()
    tr = np.flatnonzero((split == "probe_train") & (domain == "in-domain"))
    va = np.flatnonzero((split == "probe_val") & (domain == "in-domain"))
    rows: list[dict] = []
    for task in spec.tasks:
        labels = task_labels(task, vocabulary, meta.columns)
        if not labels:
            continue
        y = np.stack([label_targets(meta[lab].to_numpy(dtype="float64", na_value=np.nan), spec.uncertain,
                                    spec.unmentioned) for lab in labels], 1)
        probe = fit_attention_probe(labels, tokens[tr], y[tr], tokens[va], y[va], epochs=spec.attention_epochs,
                                    lr=spec.attention_lr, heads=spec.attention_heads, seed=spec.seed, device=device)
        if probe is None:
            continue
        cols = [labels.index(lab) for lab in probe.labels]
        rows += domain_rows(f"{task}:attention", list(probe.labels), y[:, cols], probe.score(tokens, device=device),
                            meta, spec)
    return pd.DataFrame(rows)
