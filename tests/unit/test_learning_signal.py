"""Continual pretraining visibly helps on the phantom corpus (issue "The full evaluation suite").

A tiny encoder trained in-process for a short budget (LocalRuntime + train_trial: the real DeepSpeed engine, the
real objective, batches from TrainBatchBuilder over the pretraining rows) must give linear probes a clearly
higher macro AUROC than the random-init encoder of the same shape and seed (the sweep's size-0 baseline) on
each classification family. The budget is counted in samples, so the outcome does not depend on how loaded the
machine is; torch runs on one thread because oversubscribed intra-op threads spin on a busy 2-core machine.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from threadpoolctl import threadpool_limits

from radscale.config.specs import EvalSpec, JobSpec, SplitSpec
from radscale.config.trial import TrialSpec
from radscale.data.phantom.generate import generate_phantom
from radscale.data.splits import assign_splits
from radscale.data.vocab import Vocabulary
from radscale.evaluate.classification import evaluate_classification
from radscale.evaluate.extract import FeatureExtractor
from radscale.models.registry import get_flavour
from radscale.objectives.build import build_task
from radscale.train.batches import TrainBatchBuilder
from radscale.train.local import LocalRuntime
from radscale.train.worker import train_trial

SEED = 0
VOCAB = Vocabulary()
N_IMAGES, IMAGE_SIZE, DECODE_SIZE = 900, 96, 80
# Most images go to the probes: the comparison is only as sharp as the probe and test sets are large.
SPLITS = SplitSpec(pretrain=0.3, probe_train=0.4, probe_val=0.1, test=0.2)
EVAL = EvalSpec(bootstrap=10, seed=SEED)
MARGIN = 0.02
