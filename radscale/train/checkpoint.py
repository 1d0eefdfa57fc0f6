"""Checkpoint layout of a trial (one directory):

  ds/…            DeepSpeed engine state (all ranks write their shards; restart resumes from here)
  encoder.pt      consolidated eval encoder state dict (rank 0) — what evaluation loads
  budget.json     BudgetState: the clock continues from here after a restart
  trial.json      the encoder flavour and objective, so the encoder can be rebuilt without the job file
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from radscale.train.budget import BudgetState

DS_DIR, DS_TAG = "ds", "state"


def save_checkpoint(path: str | Path, engine, task, state: BudgetState, trial_meta: dict, is_chief: bool) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(path / DS_DIR), tag=DS_TAG, client_state={"task": task.extra_state()})
    if is_chief:
        enc = task.eval_encoder()
        torch.save({k: v.detach().cpu() for k, v in enc.state_dict().items()}, path / "encoder.pt")
        (path / "budget.json").write_text(json.dumps(state.to_dict()))
        (path / "trial.json").write_text(json.dumps(trial_meta))


def load_checkpoint(path: str | Path, engine, task) -> BudgetState:
    path = Path(path)
    _, client = engine.load_checkpoint(str(path / DS_DIR), tag=DS_TAG, load_module_strict=True)
    if client and "task" in client:
        task.load_extra_state(client["task"])
    return BudgetState.from_dict(json.loads((path / "budget.json").read_text()))


def read_budget(path: str | Path) -> BudgetState:
    return BudgetState.from_dict(json.loads((Path(path) / "budget.json").read_text()))
