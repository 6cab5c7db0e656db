"""The MaskConver trainer: teacher-forced centres, Model Garden losses, atomic resumable checkpoints.

``train(config, data, steps, out_dir)`` trains ``build_model(config)`` on a COCO panoptic dataset (a folder or
a :class:`~maskconver.models.panoptic_dataset.PanopticDataset`):

* every step draws ``batch_size`` images (a fresh permutation per epoch) and augments them (flip, scale
  jitter ``config.aug_scale_min..max``, crop/pad) with NumPy generators seeded by ``(seed, step)``, so a run
  is a pure function of ``(seed, step)`` and a resumed run sees exactly the batches of an uninterrupted one;
* the model runs with the GT centres and classes (teacher forcing, as Model Garden's ``train_step``): the
  centre embeddings are gathered at ``box_indices``, turned into mask embeddings by
  ``model.mask_embeddings`` and multiplied with the mask features (``einsum('bqc,bhwc->bhwq')``);
* loss = centre focal + ``mask_weight`` * (BCE + global adaptive dice) + L2 (:mod:`maskconver.models.losses`);
* optimiser: ``"adamw"`` (default; lr 2e-3, linear warm-up then cosine to 0, decoupled weight decay 1e-4 on
  kernels) or ``"sgd"`` (Model Garden: momentum 0.9, same schedule shape, lr 0.04 at batch 64). The tiny
  synthetic model trains several times faster with AdamW in a short budget (see ``train_cli``);
* every ``checkpoint_every`` steps ``ckpt-STEP.npz`` (weights, BN statistics, optimiser slots, step, loss
  history, settings) is written atomically and then ``latest.json`` is replaced atomically; the two newest
  checkpoints are kept. ``resume=True`` continues from ``latest.json``. At the end ``model.npz`` holds the
  weights only (a project checkpoint that ``load_checkpoint`` reads).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from maskconver.models.checkpoint import (
    CheckpointError,
    read_checkpoint_arrays,
    save_checkpoint,
)
from maskconver.models.config import MaskConverConfig, get_config
from maskconver.runtime.atomic import write_text_atomic

LOSS_TERMS = ("total", "center", "mask", "dice", "l2")
DEFAULT_LR = {"adamw": 2e-3, "sgd": 0.04}
SLOT_BUCKET = 16  # instance slots are trimmed to a multiple of this (padded slots weigh nothing)
KEEP_CHECKPOINTS = 2
STATE_KEY = "train_state"


class TrainError(ValueError):
    """Bad training arguments or an output folder that cannot be resumed."""


@dataclass
class TrainResult:
    """What :func:`train` did: the final step, per-step losses of this call, and the written files."""

    model: Any  # MaskConverModel
    step: int
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per step run in this call
    out_dir: Path | None = None
    final_path: Path | None = None
    resumed_from: int = 0
    val_history: list[dict[str, float]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# Small pure helpers


def batch_indices(num_images: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """``[batch_size]`` image indices for ``step``: consecutive slices of a per-epoch permutation.

    Epoch ``e`` is ``np.random.default_rng([seed, e]).permutation(num_images)``; a batch that straddles two
    epochs takes the end of one and the start of the next. Pure in ``(num_images, batch_size, step, seed)``.
    """
    if num_images < 1 or batch_size < 1 or step < 0:
        raise ValueError(
            f"need num_images >= 1, batch_size >= 1, step >= 0; got {num_images}, {batch_size}, {step}"
        )
    pos = step * batch_size + np.arange(batch_size)
    epochs = pos // num_images
    out = np.empty(batch_size, np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(num_images)
        sel = epochs == e
        out[sel] = perm[pos[sel] % num_images]
    return out


def learning_rate(step: float, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from 0 to ``base_lr`` over ``warmup_steps``, then cosine to 0 at ``total_steps``.

    As Model Garden's ``LinearWarmup(CosineDecay)``: the cosine is evaluated at the global step.
    """
    if step < warmup_steps:
        return base_lr * step / max(warmup_steps, 1)
    frac = min(step, total_steps) / max(total_steps, 1)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * frac))


def slot_bucket(max_instances: int, num_slots: int) -> int:
    """Slots to keep for a batch whose largest image has ``max_instances`` instances (multiple of 16)."""
    return int(min(num_slots, max(SLOT_BUCKET, -(-max_instances // SLOT_BUCKET) * SLOT_BUCKET)))


def _atomic_write_text(path: Path, text: str) -> None:
    write_text_atomic(path, text, fsync=True)


# --------------------------------------------------------------------------------------------------------------
# Data


def open_dataset(data: Any):
    """A dataset object from a folder/JSON path, or ``data`` itself if it already is one."""
    if isinstance(data, str | os.PathLike):
        from maskconver.models.panoptic_dataset import PanopticDataset

        p = Path(data)
        if not p.exists():
            raise TrainError(f"data {p} does not exist; pass a COCO panoptic folder (or --data synthetic)")
        return PanopticDataset(p)
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise TrainError(f"data must be a dataset folder or a PanopticDataset, got {type(data).__name__}")
    return data


def _isthing_for(config: MaskConverConfig, dataset: Any) -> np.ndarray:
    """The config's thing table, checked against the dataset's categories (which must fit the heatmap)."""
    table = config.is_thing_table()
    cats = getattr(dataset, "categories", None)
    if cats is None:
        return table
    bad_id = [c.id for c in cats if c.id >= config.num_classes]
    if bad_id:
        raise TrainError(
            f"the dataset has category ids {bad_id[:8]} >= num_classes {config.num_classes} of config "
            f"{config.name!r}; pick a config with more classes or remap the dataset"
        )
    wrong = [c.id for c in cats if bool(table[c.id]) != bool(c.isthing)]
    if wrong:
        raise TrainError(
            f"config {config.name!r} and the dataset disagree on thing/stuff for category ids {wrong[:8]}; "
            "use the config made for this dataset (e.g. --config nano for the synthetic data)"
        )
    return table


def with_dataset_labels(config: MaskConverConfig, dataset: Any) -> MaskConverConfig:
    """``config`` with the dataset's categories as its ``labels`` (one row per id, void and unused ids
    included), so the checkpoint, and the model converted from it, carry the names, thing flags and colours
    it was trained with; unchanged for a dataset without a category table."""
    table = getattr(dataset, "category_table", None)
    if table is None:
        return config
    # names on one line each (labels.txt holds one per line)
    rows = tuple(
        (c.id, " ".join(c.name.splitlines()), bool(c.isthing), tuple(int(v) for v in c.color))
        for c in table(config.num_classes)
    )
    return dataclasses.replace(config, labels=rows)


class BatchMaker:
    """Builds the NumPy batch of a step (pure in the step: see :func:`batch_indices`)."""

    def __init__(
        self, config: MaskConverConfig, dataset: Any, batch_size: int, seed: int, augment: bool = True
    ):
        from maskconver.models.targets import make_batch

        self._make_batch = make_batch
        self.config, self.dataset, self.batch_size, self.seed, self.augment = (
            config,
            dataset,
            batch_size,
            seed,
            augment,
        )
        self.isthing = _isthing_for(config, dataset)

    def indices(self, step: int) -> np.ndarray:
        return batch_indices(len(self.dataset), self.batch_size, step, self.seed)

    def make(self, indices: Sequence[int], step: int) -> dict[str, np.ndarray]:
        c = self.config
        b = self._make_batch(
            self.dataset,
            indices,
            np.random.default_rng([self.seed, step, 1]),
            c.input_size,
            self.augment,
            isthing_table=self.isthing,
            num_classes=c.num_classes,
            num_instances=c.num_instances,
            stride=c.stride,
            gaussian_iou=c.gaussian_iou,
            min_stuff_area=c.min_stuff_area,
            scale_min=c.aug_scale_min,
            scale_max=c.aug_scale_max,
            dense_masks=False,
        )
        k = slot_bucket(int(b["num_instances"].max()), c.num_instances)
        return {
            "image": b["image"].astype(np.float32),
            "heatmap": b["heatmap"].astype(np.float32),
            "classes": b["panoptic_classes"][:, :k].astype(np.int32),
            "box_indices": b["box_indices"][:, :k].astype(np.int32),
            "mask_weights": b["mask_weights"][:, :k].astype(np.float32),
            "num_instances": b["num_instances"].astype(np.int32),
            "padding_mask": b["padding_mask"].astype(np.float32),
            "mask_slots": b["mask_slots"].astype(np.int32),
        }

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        return self.make(self.indices(step), step)


# --------------------------------------------------------------------------------------------------------------
# Model pieces


def teacher_forced_logits(model, outputs: dict, box_indices, classes):
    """Mask logits ``[B, h, w, K]`` from the dense outputs at GT centres ``[B, K, 2]`` (y, x) and classes."""
    import tensorflow as tf

    centre = tf.gather_nd(outputs["center_embeddings"], box_indices, batch_dims=1)  # [B, K, D]
    emb = model.mask_embeddings(centre, classes)
    return tf.einsum("bqc,bhwc->bhwq", emb, outputs["mask_features"])


def masks_from_slots(mask_slots, num_instances, num_slots):
    """``[B, H, W]`` slot map -> ``[B, H, W, K]`` masks (1/0 in valid slots, -1 in unused slots)."""
    import tensorflow as tf

    k = tf.range(num_slots, dtype=tf.int32)
    one_hot = tf.cast(tf.equal(mask_slots[..., None], k), tf.float32)
    valid = k[None, None, None, :] < num_instances[:, None, None, None]
    return tf.where(valid, one_hot, -tf.ones_like(one_hot))


def init_weights(model, path: str | Path) -> tuple[list[str], list[str]]:
    """Load every variable of ``path`` (Model Garden or project checkpoint) whose name and shape match.

    Returns ``(loaded, skipped)`` canonical names of ``model``. Raises if nothing matches.
    """
    arrays, _cfg, kind = read_checkpoint_arrays(path)
    loaded, skipped = [], []
    for name, var in model.variables_by_name().items():
        a = arrays.get(name)
        if a is not None and tuple(a.shape) == tuple(var.shape):
            var.assign(np.asarray(a, np.float32))
            loaded.append(name)
        else:
            skipped.append(name)
    if not loaded:
        raise TrainError(
            f"--init {path} ({kind}) shares no variable (name and shape) with this config; "
            "is it a MaskConver checkpoint of a MobileNetMultiAVGSeg model?"
        )
    return loaded, skipped


class Optimizer:
    """SGD with momentum 0.9 (Keras/Model Garden form) or AdamW, with an explicit, saveable state.

    ``variables`` are the slots in a fixed order: the step counter, then one (SGD velocity) or two (Adam
    m, v) slots per trained variable. The learning rate at step ``t`` (0-based, before the update) is
    :func:`learning_rate`. AdamW decays ``decay_mask`` variables by ``lr * weight_decay`` before the
    Adam update (as ``keras.optimizers.AdamW``).
    """

    def __init__(
        self,
        kind: str,
        params: Sequence[Any],
        base_lr: float,
        warmup_steps: int,
        total_steps: int,
        weight_decay: float = 0.0,
        decay_mask: Sequence[bool] | None = None,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-7,
    ):
        import tensorflow as tf

        if kind not in DEFAULT_LR:
            raise TrainError(f"optimizer {kind!r} is not supported; use one of {sorted(DEFAULT_LR)}")
        self.kind, self.params = kind, list(params)
        self.base_lr, self.warmup, self.total = float(base_lr), int(warmup_steps), int(total_steps)
        self.weight_decay, self.beta1, self.beta2, self.epsilon = float(weight_decay), beta1, beta2, epsilon
        self.decay_mask = list(decay_mask) if decay_mask is not None else [True] * len(self.params)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        per = 1 if kind == "sgd" else 2
        self.slots = [
            [tf.Variable(tf.zeros(p.shape, tf.float32), trainable=False) for _ in range(per)]
            for p in self.params
        ]

    @property
    def variables(self) -> list[Any]:
        return [self.iterations] + [v for pair in self.slots for v in pair]

    def lr_tensor(self, step):
        import tensorflow as tf

        s = tf.cast(step, tf.float32)
        warm = self.base_lr * s / float(max(self.warmup, 1))
        frac = tf.minimum(s, float(self.total)) / float(max(self.total, 1))
        cos = 0.5 * self.base_lr * (1.0 + tf.cos(math.pi * frac))
        return tf.where(s < float(self.warmup), warm, cos)

    def apply(self, grads: Sequence[Any]) -> None:
        import tensorflow as tf

        lr = self.lr_tensor(self.iterations)
        if self.kind == "sgd":
            for p, g, (vel,) in zip(self.params, grads, self.slots, strict=True):
                vel.assign(0.9 * vel - lr * g)
                p.assign_add(vel)
        else:
            t = tf.cast(self.iterations + 1, tf.float32)
            lr_t = lr * tf.sqrt(1.0 - tf.pow(self.beta2, t)) / (1.0 - tf.pow(self.beta1, t))
            for p, g, (m, v), decay in zip(self.params, grads, self.slots, self.decay_mask, strict=True):
                if decay and self.weight_decay:
                    p.assign_sub(p * (lr * self.weight_decay))
                m.assign_add((g - m) * (1.0 - self.beta1))
                v.assign_add((tf.square(g) - v) * (1.0 - self.beta2))
                p.assign_sub(lr_t * m / (tf.sqrt(v) + self.epsilon))
        self.iterations.assign_add(1)


# --------------------------------------------------------------------------------------------------------------
# Checkpoints


def _checkpoint_path(out_dir: Path, step: int) -> Path:
    return out_dir / f"ckpt-{step:07d}.npz"


def _write_checkpoint(model, optimizer, out_dir: Path, step: int, state: dict, history: dict) -> Path:
    extra: dict[str, np.ndarray] = {
        STATE_KEY: np.frombuffer(json.dumps(state, sort_keys=True).encode(), np.uint8),
        "step": np.array(step, np.int64),
    }
    for i, v in enumerate(optimizer.variables):
        extra[f"opt_{i:04d}"] = np.asarray(v.numpy())
    for k, v in history.items():
        extra[f"hist_{k}"] = np.asarray(v, np.float32)
    path = save_checkpoint(model, _checkpoint_path(out_dir, step), extra=extra)
    _atomic_write_text(
        out_dir / "latest.json", json.dumps({"step": step, "checkpoint": path.name}, indent=1) + "\n"
    )
    # keep the newest KEEP_CHECKPOINTS (the one latest.json names is always among them)
    ckpts = sorted(out_dir.glob("ckpt-*.npz"))
    for old in ckpts[:-KEEP_CHECKPOINTS]:
        if old.name != path.name:
            old.unlink(missing_ok=True)
    return path


def _read_extras(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k[2:-2]: z[k] for k in z.files if k.startswith("__") and k.endswith("__")}
    except (OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{path} is not readable ({e})") from e


def find_resume_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint ``latest.json`` names; if that is missing or broken, the newest readable ckpt-*.npz."""
    latest = out_dir / "latest.json"
    cands: list[Path] = []
    if latest.exists():
        try:
            cands.append(out_dir / json.loads(latest.read_text())["checkpoint"])
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    cands += sorted(out_dir.glob("ckpt-*.npz"), reverse=True)
    for c in cands:
        if c.is_file():
            try:
                ex = _read_extras(c)
            except CheckpointError:
                continue
            if STATE_KEY in ex and "step" in ex:
                return c
    return None


# --------------------------------------------------------------------------------------------------------------
# Progress


class _Progress:
    def __init__(self, total: int, start: int, enabled: bool, log_every: int, stream=None):
        self.total, self.start, self.enabled, self.log_every = total, start, enabled, max(1, log_every)
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self.last_draw = 0.0
        self.window: list[dict[str, float]] = []

    def update(self, step: int, losses: dict[str, float], lr: float) -> None:
        if not self.enabled:
            return
        self.window.append(losses)
        now = time.perf_counter()
        done = step - self.start
        rate = done / max(now - self.t0, 1e-9)
        end = step == self.total
        if self.tty and not end and now - self.last_draw < 0.25:
            return
        if not self.tty and not end and step % self.log_every:
            return
        mean = {k: float(np.mean([w[k] for w in self.window])) for k in LOSS_TERMS}
        self.window = []
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        width = 24
        filled = int(width * step / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        line = (
            f"[{bar}] {step}/{self.total} loss {mean['total']:.4f} (centre {mean['center']:.4f} "
            f"bce {mean['mask']:.4f} dice {mean['dice']:.4f} l2 {mean['l2']:.4f}) lr {lr:.2e} "
            f"{rate:.2f} steps/s eta {_fmt_time(eta)}"
        )
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        if self.tty and end:
            self.stream.write("\n")
        self.stream.flush()
        self.last_draw = now

    def message(self, text: str) -> None:
        if self.enabled:
            self.stream.write(("\n" if self.tty else "") + text + "\n")
            self.stream.flush()


def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# --------------------------------------------------------------------------------------------------------------
# The trainer


def train(
    config: MaskConverConfig | str,
    data: Any,
    steps: int,
    out_dir: str | Path | None,
    batch_size: int = 8,
    lr: float | None = None,
    seed: int = 0,
    init: str | Path | None = None,
    resume: bool = True,
    checkpoint_every: int = 500,
    progress: bool = True,
    val_data: Any = None,
    *,
    optimizer: str = "adamw",
    warmup_steps: int | None = None,
    weight_decay: float = 1e-4,
    log_every: int = 50,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    val_images: int = 32,
) -> TrainResult:
    """Train MaskConver; see the module docstring. Returns a :class:`TrainResult`.

    Args:
        config: a :class:`MaskConverConfig` or a name/YAML for :func:`get_config`.
        data: a COCO panoptic folder or dataset object.
        steps: total optimiser steps (a resumed run continues up to ``steps``).
        out_dir: checkpoints, ``latest.json``, ``train_log.jsonl`` and ``model.npz``; None writes nothing.
        lr: peak learning rate (default 2e-3 for adamw, 0.04 * batch/64 for sgd).
        init: a Model Garden or project checkpoint to start from (every name+shape match is loaded);
            ignored when resuming.
        warmup_steps: linear warm-up length (default ``min(500, steps // 10)``).
        weight_decay: AdamW's decoupled decay on kernels (the reference L2 term is always in the loss).
        val_data: optional dataset; its loss (no augmentation) on ``val_images`` images is logged at
            every checkpoint.
    """
    import tensorflow as tf
    from maskconver.models.architecture import build_model
    from maskconver.models.losses import L2_SUFFIXES, l2_regularization, maskconver_losses

    config = get_config(config)
    if not isinstance(steps, int) or steps < 1:
        raise TrainError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise TrainError(f"batch_size must be a positive integer, got {batch_size!r}")
    if checkpoint_every < 1:
        raise TrainError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if optimizer not in DEFAULT_LR:
        raise TrainError(f"optimizer {optimizer!r} is not supported; use one of {sorted(DEFAULT_LR)}")
    if lr is None:
        lr = DEFAULT_LR[optimizer] * (batch_size / 64 if optimizer == "sgd" else 1.0)
    if not lr > 0:
        raise TrainError(f"lr must be positive, got {lr}")
    warmup = min(500, steps // 10) if warmup_steps is None else int(warmup_steps)
    dataset = open_dataset(data)
    if len(dataset) < 1:
        raise TrainError("the training dataset has no images")
    maker = BatchMaker(config, dataset, batch_size, seed)
    config = with_dataset_labels(config, dataset)
    val_maker = None
    if val_data is not None:
        val_ds = open_dataset(val_data)
        val_maker = BatchMaker(config, val_ds, min(batch_size, len(val_ds)), seed, augment=False)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    report = _Progress(steps, 0, progress, log_every)

    model = build_model(config, seed=seed)
    tf.random.set_seed(seed)
    variables = model.trainable_variables
    named = list(model.variables_by_name().items())
    decay_mask = [n.endswith(L2_SUFFIXES) for n, v in model.variables_by_name().items() if v.trainable]
    opt = Optimizer(optimizer, variables, lr, warmup, steps, weight_decay, decay_mask)

    settings = {
        "config": config.name,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "optimizer": optimizer,
        "warmup_steps": warmup,
        "weight_decay": weight_decay,
        "steps": steps,
        "num_images": len(dataset),
    }
    start = 0
    hist: dict[str, list[float]] = {k: [] for k in LOSS_TERMS}
    ckpt = find_resume_checkpoint(out) if (out is not None and resume) else None
    if ckpt is not None:
        start = _restore(model, opt, ckpt, config, settings, hist, report)
    elif init is not None:
        loaded, skipped = init_weights(model, init)
        report.message(f"init from {init}: loaded {len(loaded)} variables, kept {len(skipped)} fresh")
    report.start = start
    if start >= steps:
        report.message(f"{out} is already at step {start} >= {steps}; nothing to train")

    signature = {
        "image": tf.TensorSpec([None, *config.input_size, 3], tf.float32),
        "heatmap": tf.TensorSpec([None, None, None, config.num_classes], tf.float32),
        "classes": tf.TensorSpec([None, None], tf.int32),
        "box_indices": tf.TensorSpec([None, None, 2], tf.int32),
        "mask_weights": tf.TensorSpec([None, None], tf.float32),
        "num_instances": tf.TensorSpec([None], tf.int32),
        "padding_mask": tf.TensorSpec([None, *config.input_size], tf.float32),
        "mask_slots": tf.TensorSpec([None, *config.input_size], tf.int32),
    }

    def forward(batch, training: bool):
        outputs = model.dense(batch["image"], training=training)
        logits = teacher_forced_logits(model, outputs, batch["box_indices"], batch["classes"])
        labels = {
            "heatmap": batch["heatmap"],
            "panoptic_masks": masks_from_slots(
                batch["mask_slots"], batch["num_instances"], tf.shape(batch["classes"])[1]
            ),
            "mask_weights": batch["mask_weights"],
            "num_instances": batch["num_instances"],
            "padding_mask": batch["padding_mask"],
        }
        l2 = l2_regularization(named, config.l2_weight_decay)
        return maskconver_losses(outputs["heatmap"], logits, labels, config.mask_weight, l2)

    @tf.function(input_signature=[signature], autograph=False)
    def train_step(batch):
        with tf.GradientTape() as tape:
            losses = forward(batch, True)
        grads = tape.gradient(losses["total"], variables)
        opt.apply(grads)
        return losses

    @tf.function(input_signature=[signature], autograph=False)
    def eval_step(batch):
        return forward(batch, False)

    def run_val() -> dict[str, float]:
        assert val_maker is not None
        n = min(val_images, len(val_maker.dataset))
        sums = dict.fromkeys(LOSS_TERMS, 0.0)
        count = 0
        for i in range(0, n, val_maker.batch_size):
            idx = list(range(i, min(i + val_maker.batch_size, n)))
            b = val_maker.make(idx, 0)
            res = eval_step({k: tf.constant(v) for k, v in b.items()})
            for k in LOSS_TERMS:
                sums[k] += float(res[k]) * len(idx)
            count += len(idx)
        return {k: v / count for k, v in sums.items()}

    result = TrainResult(model=model, step=start, out_dir=out, resumed_from=start)
    log_path = out / "train_log.jsonl" if out is not None else None
    if log_path is not None:
        _truncate_log(log_path, start)
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pending = pool.submit(maker, start) if start < steps else None
        window: list[dict[str, float]] = []
        for step in range(start, steps):
            batch = pending.result()
            pending = pool.submit(maker, step + 1) if step + 1 < steps else None
            res = train_step({k: tf.constant(v) for k, v in batch.items()})
            losses = {k: float(res[k]) for k in LOSS_TERMS}
            if not math.isfinite(losses["total"]):
                raise TrainError(
                    f"the loss became {losses['total']} at step {step + 1}; lower --lr (now {lr:g}) "
                    "or resume from the last checkpoint"
                )
            done = step + 1
            for k in LOSS_TERMS:
                hist[k].append(losses[k])
            result.history.append({"step": float(done), **losses})
            window.append(losses)
            cur_lr = learning_rate(done, lr, warmup, steps)
            report.update(done, losses, cur_lr)
            if on_step is not None:
                on_step(done, losses)
            if log_path is not None and (done % log_every == 0 or done == steps):
                rec = {
                    "step": done,
                    "lr": cur_lr,
                    **{k: float(np.mean([w[k] for w in window])) for k in LOSS_TERMS},
                }
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                window = []
            if out is not None and (done % checkpoint_every == 0 or done == steps):
                state = {**settings, "step": done, "config_json": config.to_json()}
                _write_checkpoint(model, opt, out, done, state, hist)
                if val_maker is not None:
                    v = run_val()
                    result.val_history.append({"step": float(done), **v})
                    report.message(
                        f"step {done}: validation loss {v['total']:.4f} (centre {v['center']:.4f})"
                    )
                    if log_path is not None:
                        with open(log_path, "a") as f:
                            f.write(json.dumps({"step": done, "val": v}) + "\n")
            result.step = done
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if out is not None:
        result.final_path = save_checkpoint(model, out / "model.npz")
        report.message(f"wrote {result.final_path} (step {result.step})")
    return result


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records past ``step`` (written after the checkpoint a resumed run restarts from)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    _atomic_write_text(path, "".join(k + "\n" for k in keep))


def _restore(model, opt, ckpt: Path, config: MaskConverConfig, settings: dict, hist: dict, report) -> int:
    """Load weights, optimiser slots and loss history from ``ckpt``; return its step."""
    from maskconver.models.checkpoint import match_weights

    arrays, embedded, _ = read_checkpoint_arrays(ckpt)
    ex = _read_extras(ckpt)
    state = json.loads(bytes(ex[STATE_KEY]).decode())
    # a checkpoint from before labels were recorded resumes into the same config with them
    if embedded is not None:
        saved = MaskConverConfig.from_dict({**embedded, "labels": embedded.get("labels") or config.labels})
        if saved != config:
            what = (
                "was trained on a dataset with other categories"
                if dataclasses.replace(saved, labels=config.labels) == config
                else f"was trained with a different config ({embedded.get('name')})"
            )
            raise TrainError(
                f"{ckpt} {what}; use another --out or pass resume=False / --no-resume to start over there"
            )
    for k in ("batch_size", "seed", "optimizer"):
        if state.get(k) != settings[k]:
            report.message(
                f"note: resuming {ckpt.name} with {k}={settings[k]!r} (it was trained with {state.get(k)!r}); "
                "the run will not match an uninterrupted one"
            )
    expected = {k: tuple(v.shape) for k, v in model.variables_by_name().items()}
    model.set_weights_dict(match_weights(arrays, expected, str(ckpt)))
    slots = sorted(k for k in ex if k.startswith("opt_"))
    if len(slots) != len(opt.variables):
        raise TrainError(
            f"{ckpt} holds {len(slots)} optimiser variables but {settings['optimizer']} needs "
            f"{len(opt.variables)}; resume with the optimizer it was trained with"
        )
    for name, var in zip(slots, opt.variables, strict=True):
        if tuple(ex[name].shape) != tuple(var.shape):
            raise TrainError(
                f"{ckpt}: optimiser variable {name} has shape {ex[name].shape}, expected {var.shape}"
            )
        var.assign(ex[name])
    step = int(ex["step"])
    for k in LOSS_TERMS:
        hist[k].extend(np.asarray(ex.get(f"hist_{k}", []), np.float32).tolist()[:step])
    report.message(f"resumed from {ckpt} at step {step}")
    return step


def read_history(path: str | Path) -> dict[str, np.ndarray]:
    """The per-step loss history (``total``, ``center``, ``mask``, ``dice``, ``l2``) saved in a checkpoint."""
    ex = _read_extras(Path(path))
    return {k: np.asarray(ex[f"hist_{k}"]) for k in LOSS_TERMS if f"hist_{k}" in ex}


__all__ = [
    "BatchMaker",
    "TrainError",
    "TrainResult",
    "batch_indices",
    "find_resume_checkpoint",
    "init_weights",
    "learning_rate",
    "masks_from_slots",
    "read_history",
    "slot_bucket",
    "teacher_forced_logits",
    "train",
]
