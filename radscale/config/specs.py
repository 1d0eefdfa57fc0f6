"""Typed, frozen specs for a sweep job (validated from TOML; unknown keys are refused).

Every choice the papers leave open is a field here with a documented default, so it is recorded with each run.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class PhantomSpec(Spec):
    n_images: int = Field(1600, ge=50, description="images generated when no manifest is given")
    seed: int = 0
    profile: str = "default"
    image_size: int = Field(128, ge=32, description="side of the generated square images")


class SplitSpec(Spec):
    """Patient-level split fractions; patients (not images) are assigned, so splits are patient-disjoint."""
    pretrain: float = Field(0.7, gt=0, lt=1)
    probe_train: float = Field(0.12, gt=0, lt=1)
    probe_val: float = Field(0.06, gt=0, lt=1)
    test: float = Field(0.12, gt=0, lt=1)
    seed: int = Field(0, description="seeds the patient assignment and the nested-subset permutation")

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitSpec":
        total = self.pretrain + self.probe_train + self.probe_val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1 (got {total:.4f})")
        return self


class DataSpec(Spec):
    manifest: str = Field("", description="manifest Parquet; empty = the phantom corpus")
    shards: str = Field("", description="folder written by `radscale prepare`; when set, its manifest is the "
                                        "source and images are read from its shards (leave `manifest` empty)")
    phantom: PhantomSpec = PhantomSpec()
    splits: SplitSpec = SplitSpec()
    ood_manifests: dict[str, str] = Field(default_factory=dict,
                                          description="domain name -> manifest evaluated out-of-domain")
    ood_phantom_profile: str = Field("", description="also evaluate on a phantom of this profile (OOD)")
    decode_size: int = Field(80, ge=16, description="images are decoded to this square size before the device")
    allow_missing_images: bool = Field(False, description="false: a missing local image refuses the sweep")
    max_eval_images: int = Field(0, ge=0, description="cap per eval split (0 = all)")
    # A cached subset is decoded once before the workers start (outside the budget): no decode task competes
    # with the training step for cores, and epochs replay blocks instead of re-running read + decode.
    cache_max_mb: float = Field(512.0, ge=0, description="materialise a trial's decoded subset in the object "
                                "store when its estimated size is at most this many MB (0 = always stream)")

    @model_validator(mode="after")
    def _one_source(self) -> "DataSpec":
        if self.manifest and self.shards:
            raise ValueError("set data.manifest or data.shards, not both (prepared shards carry their manifest)")
        return self


class EncoderSpec(Spec):
    name: str = Field(description="registry name: rad-dino, rad-dino-tiny, mi2, mi2-tiny")
    objective: Literal["dinov2", "clip", "unicl"]
    weights: str = Field("", description="local path to open weights; empty = random init (the report says so)")

    @property
    def key(self) -> str:
        return f"{self.name}.{self.objective}"


class BudgetSpec(Spec):
    """The equal budget per trial. mode 'seconds' (the paper) counts training-loop wall clock incl. stalls."""
    mode: Literal["seconds", "samples", "gpu_hours", "flops"] = "seconds"
    value: float = Field(gt=0)


class Dinov2Spec(Spec):
    """DINOv2 / RAD-DINO step (facebookresearch/dinov2 defaults unless noted)."""
    global_crops: int = Field(2, ge=2, le=2, description="fixed at 2, as DINOv2: the teacher sees both, each "
                              "student global is matched with the other view; recorded with the run")
    local_crops: int = Field(8, ge=0)
    global_size: int = 224
    local_size: int = 98
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    crop_antialias: bool = Field(True, description="crops filtered at their own downscale factor before the "
                                 "bilinear resample, as torchvision's antialiased RandomResizedCrop; false = "
                                 "plain bilinear (1-px lines alias at 518 -> 98)")
    n_prototypes: int = 65536
    head_hidden: int = 2048
    head_bottleneck: int = 256
    head_layers: int = 3
    student_temp: float = 0.1
    teacher_temp: tuple[float, float] = (0.04, 0.07)
    teacher_temp_warmup: float = Field(0.3, ge=0, le=1, description="fraction of the budget")
    centering: Literal["ema", "sinkhorn_knopp"] = "ema"
    center_momentum: float = 0.9
    teacher_momentum: tuple[float, float] = (0.992, 1.0)
    koleo_weight: float = 0.1
    ibot_weight: float = 1.0
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    mask_image_fraction: float = 0.5
    freeze_last_layer: float = Field(0.01, ge=0, le=1, description="fraction of the budget")
    layer_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    weight_decay: tuple[float, float] = (0.04, 0.4)
    # Photometric augmentation kept for single-channel CXRs (see docs/SCIENCE.md); colour ops are dropped.
    blur_p: tuple[float, float, float] = Field((1.0, 0.1, 0.5), description="global1, global2, local (paper rates)")
    # >= 8: the blur's reflect padding (3 sigma) must stay inside the crop
    blur_ref_sizes: tuple[Annotated[int, Field(ge=8)], Annotated[int, Field(ge=8)]] = Field(
        (224, 96), description="global, local crop size at which the blur sigma U(0.1, 2.0) is in pixels "
                               "(DINOv2's sizes); other sizes scale it")
    solarize_p: float = 0.2
    jitter_p: float = 0.8
    flip_p: float = 0.5


class ClipSpec(Spec):
    """MI2 step: CLIP on image-report pairs, or UniCL adding image-label pairs."""
    image_scale: tuple[float, float] = (0.8, 1.0)
    crop_antialias: bool = Field(True, description="as train.dinov2.crop_antialias")
    random_erasing_p: float = 0.25
    logit_scale_init: float = Field(1.0, description="MI2 initialises the log scale to 1.0 (scale e)")
    max_logit_scale: float = Field(100.0, ge=0, description="cap of the scale exp(logit_scale) in the loss, as "
                                                            "CLIP / open_clip (100); 0 = no cap (MI2's own cap "
                                                            "is not published)")
    context_length: int = 77
    label_sampling: Literal["one_positive"] = "one_positive"
    positive_policy: Literal["any_shared", "sample_one"] = "any_shared"
    prompt_templates: tuple[str, ...] = ("a chest x-ray showing {label}.", "{label}.", "findings of {label}.")
    no_finding_prompt: str = "no acute cardiopulmonary abnormality"
    weight_decay: float = 0.2
    model_ema: float = Field(0.999, ge=0, lt=1, description="decay of the EMA of the image tower, which is what "
                                                            "the trial saves and evaluates (MI2: 0.999); 0 = the "
                                                            "trained weights")
    model_ema_warmup: bool = Field(True, description="decay min(model_ema, (1 + t)/(10 + t)) at update t (the "
                                                     "num_updates rule of TF's ExponentialMovingAverage), so a "
                                                     "short trial's EMA is not its initial weights; MI2's own "
                                                     "warm-up is not published")


class TrainSpec(Spec):
    batch_size: int = Field(32, ge=1, description="per worker")
    lr: float = Field(5e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup: float = Field(0.1, ge=0, lt=1, description="fraction of the budget")
    grad_clip: float = Field(3.0, gt=0)
    zero_stage: int = Field(2, ge=0, le=2, description="DeepSpeed ZeRO stage (3 needs gathered EMA; not offered)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 = autocast on GPU workers (float32 "
                                               "weights and EMA teacher); CPU workers stay fp32")
    report_every_s: float = Field(2.0, gt=0)
    checkpoint_every_s: float = Field(0.0, ge=0, description="0 = only the final checkpoint")
    prefetch_batches: int = Field(2, ge=0)
    batch_wait_s: float = Field(0.25, gt=0, description="bounded wait for a batch, so the stop lands on time")
    seed_offset: int = 0
    # torch.compile of the image encoder's blocks (train/worker.py `compile_encoders`); compile time lands in
    # startup_s with the warm-up step, not in the budget.
    compile: bool = Field(False, description="torch.compile the image encoder's blocks (regional, in place)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode (inductor only)")
    compile_backend: Literal["inductor", "eager", "aot_eager"] = Field(
        "inductor", description="torch.compile backend; 'eager' / 'aot_eager' only for debugging")
    dinov2: Dinov2Spec = Dinov2Spec()
    clip: ClipSpec = ClipSpec()


class HardwareSpec(Spec):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0, description="logical CPUs a Train worker reserves in Ray")
    torch_threads: int = Field(0, ge=0, description="intra-op threads per CPU worker; 0 = ceil(cpus_per_worker)")
    gpus_per_worker: float = Field(0.0, ge=0)
    data_cpus: float = Field(1.0, gt=0, description="CPU cap of each trial's Ray Data pipeline")
    peak_tflops: float = Field(0.0, ge=0, description="per-device peak for MFU; 0 = unknown")
    node_price_per_hour: float = Field(0.0, ge=0, description="$/h of one worker's share (e.g. one GPU): the "
                                                              "default trial rate (x num_workers) and node price")
    max_failures: int = Field(2, ge=0, description="worker-group restarts per trial (from its last checkpoint)")


ReportSection = Literal["findings", "impression", "full"]   # eval.report_section


class EvalSpec(Spec):
    tasks: tuple[Literal["findings", "tubes"], ...] = ("findings", "tubes")
    batch_size: int = Field(64, ge=1)
    actors: int = Field(1, ge=1, description="actor-pool size for frozen-feature extraction")
    actor_gpus: float = Field(0.0, ge=0)
    precision: Literal["fp32", "bf16"] = Field("fp32", description="extraction on GPU actors: bf16 autocast (the "
                                                                  "inference ceiling of PERFORMANCE.md) or fp32; "
                                                                  "CPU actors always run fp32")
    models_per_pass: int = Field(8, ge=1, description="encoders extracted together in one pass over the images")
    probe_c_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    min_positives: int = Field(5, ge=1, description="labels with fewer test positives are skipped (a macro "
                                                                 "row's n_labels counts the labels it averages)")
    uncertain: Literal["exclude", "positive", "negative"] = "exclude"
    unmentioned: Literal["negative", "exclude"] = "negative"
    bootstrap: int = Field(200, ge=10)
    seed: int = 0
    # Features (evaluate/extract.py): one actor-pool pass gives every family its inputs.
    layers: int = Field(4, ge=1, description="classification features = CLS of the last n layers ++ mean patch "
                                             "token of the last (DINOv2 linear eval: 4); ViT layers are blocks, "
                                             "DaViT layers are stages (global-average pooled)")
    max_patch_grid: int = Field(16, ge=1, description="last-layer patch tokens (float16) are average-pooled to at "
                                                      "most this many per side, bounding memory for full-size "
                                                      "encoders; they feed attention probes, segmentation and "
                                                      "report generation (segmentation tokens, seg_stage / "
                                                      "seg_layers, are pooled the same way)")
    max_feature_gb: float = Field(0.0, ge=0, description="refuse, before any training, a sweep whose largest "
                                                         "extraction pass would hold more frozen features than "
                                                         "this on the driver (eval images x per-image columns x "
                                                         "encoders per pass x 2 copies); 0 = 80% of the "
                                                         "memory of the host that runs the sweep")
    probe_threads: int = Field(1, ge=0, description="CPU threads (torch + BLAS) of the driver-side probes; 0 = "
                                                    "leave as is (tiny probes run fastest on one thread)")
    # Evaluation families besides the linear probes of `tasks`; each can be switched off.
    attention_probe: bool = Field(True, description="attention-pooling probe per task (rows '<task>:attention')")
    attention_epochs: int = Field(30, ge=1, description="max epochs; the best probe_val macro AUROC epoch is kept")
    attention_lr: float = Field(3e-3, gt=0)
    attention_heads: int = Field(4, ge=1, description="cross-attention heads (1 when the width is not divisible)")
    segmentation: bool = Field(True, description="lines/tubes segmentation probe on patch tokens (ViT: of the "
                                                 "last seg_layers blocks; DaViT: seg_stage's map) (rows "
                                                 "'segmentation': Dice and clDice per device type); needs "
                                                 "mask_uri")
    seg_head: Literal["linear", "pyramid"] = Field(
        "pyramid", description="'pyramid' = two 3x3-conv + 2x upsampling stages (SETR-PUP), logits at 4x the "
                               "token grid; 'linear' = one logit per patch (DINOv2's linear probe), too coarse "
                               "for a 1-2 px catheter (phantom Dice 0.07 linear vs 0.10-0.17 pyramid, same "
                               "8x8 tokens)")
    seg_stage: int = Field(-2, ge=-4, le=-1, description="DaViT (MI2): the stage whose map feeds the segmentation "
                                                        "probe, counted from the end: -1 = last (stride 32: 15x15 "
                                                        "at 480 px, 2x2 for the 64-px tiny flavour), -2 = stride "
                                                        "16 (30x30, nearest to RAD-DINO's 14-px patches), -3 = "
                                                        "stride 8; pooled to max_patch_grid like the patch "
                                                        "tokens; ViT encoders use their one token grid")
    seg_layers: int = Field(4, ge=1, description="ViT (RAD-DINO): the segmentation probe reads the patch tokens "
                                                 "of the last n blocks, each through the final LayerNorm, "
                                                 "concatenated along channels (DINOv2's multi-layer input: 4; "
                                                 "all blocks when n exceeds the depth); 1 = the last block only. "
                                                 "Extraction holds n x the patch tokens' memory (RAD-DINO on the "
                                                 "16x16 grid: 0.4 MB per image per block, float16)")
    seg_epochs: int = Field(60, ge=1, description="max epochs; the best probe_val macro Dice epoch is kept (early "
                                                  "stop 10 epochs after the best, never before an epoch with "
                                                  "Dice > 0)")
    seg_lr: float = Field(1e-3, gt=0)
    seg_repeats: int = Field(3, ge=1, description="the head is fitted from this many seeds (eval.seed, +1, ...) "
                                                  "and each test image's Dice/clDice is the mean over the fits: "
                                                  "one fit's Dice spreads by sd ~0.03 over seeds on ~200 "
                                                  "phantom training images, as much as pretraining moves it "
                                                  "(docs/SCIENCE.md); 1 = one fit")
    seg_mask_size: int = Field(224, ge=8, description="masks are mapped through the image geometry to "
                                                      "min(encoder input, this) px per side and scored there")
    report_generation: bool = Field(True, description="report-generation probe (rows 'report_generation': label "
                                                      "F1, BLEU-4, ROUGE-L); needs report text")
    report_decoder: str = Field("small", description="'small' = word-level decoder trained from scratch (CPU), or a "
                                                     "local folder with a Hugging Face causal LM + tokenizer")
    report_section: ReportSection = Field(
        "findings", description="the report text the probe is trained on and scored against: the FINDINGS "
                                "section (as MAIRA-2), the IMPRESSION, or the full report; a report without that "
                                "section falls back to the other, then to the report less its history sections")
    report_epochs: int = Field(30, ge=1, description="max epochs; the lowest probe_val loss epoch is kept (early "
                                                     "stop after 3 without gain: ~12 on the phantom)")
    report_max_test: int = Field(50, ge=0, description="test reports generated per domain (seeded sample, the "
                                                        "same for every trial; 0 = all)")
    report_max_tokens: int = Field(64, ge=8, description="reports are trained and generated up to this many "
                                                          "tokens")


class TrackingSpec(Spec):
    uri: str = Field("", description="MLflow tracking URI; empty = sqlite under the output dir")
    experiment: str = Field("", description="empty = the sweep name")


class SweepSpec(Spec):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    output_dir: str = Field("runs", description="a local or mounted directory; on a multi-node cluster a shared "
                                                "mount (NFS, EFS, Filestore) at the same path on every node")
    storage_uri: str = Field("", description="Ray Tune/Train storage (checkpoints): a path or an s3://, gs:// "
                                             "URI; empty = <output_dir>/<sweep>/ray")
    seeds: tuple[int, ...] = (0,)
    max_concurrent_trials: int = Field(1, ge=1)
    ray_address: str = Field("", description="empty = $RAY_ADDRESS (set by `ray job submit`) or a local Ray")

    @model_validator(mode="after")
    def _local_output(self) -> "SweepSpec":
        # Driver-side files (manifest, result.json, report) are written with plain file I/O; an object-store
        # URI here would silently become a local folder named "s3:".
        if "://" in self.output_dir:
            raise ValueError(f"sweep.output_dir must be a local or mounted path, got {self.output_dir!r}; "
                             "put Ray checkpoints on object storage with sweep.storage_uri")
        return self


class CostSpec(Spec):
    """Cost bound of a sweep (docs RAY.md "Cost bound"): spend = node-hours x price, measured while Ray runs.

    A trial starts only if spend so far + what running trials are still projected to cost + its own projection
    fit in `budget_usd`; once the measured spend reaches it, running trials end cleanly (checkpointed, resumable).
    """
    budget_usd: float = Field(0.0, ge=0, description="0 = no bound (spend is still measured and reported)")
    cluster: str = Field("", description="cluster config (cluster/aws.yaml, cluster/kuberay/*.yaml) whose node "
                                         "types `prices` must all price; relative to the working directory")
    prices: str = Field("", description="price table in cluster/prices.toml format; empty with `cluster` set = "
                                        "prices.toml beside it (or in its parent folder)")
    spot_at_ceiling: bool = Field(True, description="price spot node types at their on-demand ceiling")
    node_prices: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict,
                                          description="node type -> $/node-hour; wins over `prices`")
    default_node_usd_per_hour: float = Field(0.0, ge=0, description="a node whose type is unknown or unpriced; "
                                                                     "0 = hardware.node_price_per_hour")
    trial_usd_per_hour: float = Field(0.0, ge=0, description="what one running trial adds per hour; "
                                                             "0 = hardware.num_workers x node_price_per_hour")
    startup_overhead_s: float = Field(300.0, ge=0, description="per-trial time outside the budget (node boot, "
                                                               "worker start, data, checkpoints) for projections")
    expected_trial_s: float = Field(0.0, ge=0, description="training time of one trial for projections; "
                                                           "0 = from the budget (needed for samples/flops)")
    poll_s: float = Field(30.0, gt=0, description="seconds between measurements of the cluster's nodes")


class JobSpec(Spec):
    sweep: SweepSpec
    data: DataSpec = DataSpec()
    encoders: tuple[EncoderSpec, ...] = Field(min_length=1)
    sizes: tuple[int, ...] = Field(min_length=1)
    budget: BudgetSpec
    train: TrainSpec = TrainSpec()
    hardware: HardwareSpec = HardwareSpec()
    eval: EvalSpec = EvalSpec()
    tracking: TrackingSpec = TrackingSpec()
    cost: CostSpec = CostSpec()

    @model_validator(mode="after")
    def _check(self) -> "JobSpec":
        if self.cost.budget_usd and self.budget.mode in ("samples", "flops") and not self.cost.expected_trial_s:
            raise ValueError(f"cost.budget_usd with a {self.budget.mode} budget needs cost.expected_trial_s "
                             "(the training time to project)")
        if any(n <= 0 for n in self.sizes):
            raise ValueError("sizes must be positive image counts")
        if list(self.sizes) != sorted(set(self.sizes)):
            raise ValueError("sizes must be strictly increasing")
        if self.train.batch_size < 2 and self.train.dinov2.koleo_weight > 0 and \
                any(e.objective == "dinov2" for e in self.encoders):
            # KoLeo is a nearest-neighbour estimate within each rank's batch; it would fail at the first step.
            raise ValueError("train.batch_size must be >= 2 per worker for the DINOv2 objective's KoLeo term "
                             "(or set train.dinov2.koleo_weight = 0)")
        keys = [e.key for e in self.encoders]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate encoder/objective pair in encoders: {keys}")
        return self
