"""Checkpoint layout of a trial (one directory):

  ds/…            DeepSpeed engine state (all ranks write their shards; restart resumes from here)
  task_rank<R>.pt each rank's task state (augmentation generators, centers, EMA count): DeepSpeed's client
                  state is written by rank 0 only, so every rank would resume with rank 0's augmentation stream
  encoder.pt      consolidated eval encoder state dict (rank 0) — what evaluation loads
  budget.json     BudgetState: the clock continues from here after a restart
  trial.json      the encoder flavour and objective, so the encoder can be rebuilt without the job file
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from radscale.objectives.distributed import rank
from radscale.train.budget import BudgetState

DS_DIR, DS_TAG = "ds", "state"


def save_checkpoint(path: str | Path, engine, task, state: BudgetState, trial_meta: dict, is_chief: bool) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    extra = task.extra_state()
    engine.save_checkpoint(str(path / DS_DIR), tag=DS_TAG, client_state={"task": extra})
    torch.save(extra, path / f"task_rank{rank()}.pt")
    if is_chief:
        enc = task.eval_encoder()
        torch.save({k: v.detach().cpu() for k, v in enc.state_dict().items()}, path / "encoder.pt")
        (path / "budget.json").write_text(json.dumps(state.to_dict()))
        (path / "trial.json").write_text(json.dumps(trial_meta))


def load_checkpoint(path: str | Path, engine, task) -> BudgetState:
    path = Path(path)
    _, client = engine.load_checkpoint(str(path / DS_DIR), tag=DS_TAG, load_module_strict=True)
    own = path / f"task_rank{rank()}.pt"
    if own.exists():
        task.load_extra_state(torch.load(own, map_location="cpu", weights_only=True))
    elif client and "task" in client:              # a checkpoint from before per-rank task state: rank 0's
        task.load_extra_state(client["task"])
    return BudgetState.from_dict(json.loads((path / "budget.json").read_text()))


def read_budget(path: str | Path) -> BudgetState:
    return BudgetState.from_dict(json.loads((Path(path) / "budget.json").read_text()))
