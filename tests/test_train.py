"""The MaskConver trainer on the real nano model and a small synthetic dataset (64x64 to stay fast).

One CLI run (synthetic data generated into OUT/data, 40 steps, checkpoints at 20 and 40) is the reference;
a second run through ``train`` is interrupted after step 25 and resumed from the step-20 checkpoint, and must
reproduce the reference exactly (the batches are a pure function of (seed, step); TF on CPU is deterministic
for this graph).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="tensorflow is needed to train: pip install maskconver[tf]")

from maskconver.models.architecture import build_model  # noqa: E402
from maskconver.models.checkpoint import load_checkpoint, read_checkpoint_arrays  # noqa: E402
from maskconver.models.config import get_config  # noqa: E402
from maskconver.models.train import (  # noqa: E402
    TrainError,
    batch_indices,
    find_resume_checkpoint,
    init_weights,
    learning_rate,
    masks_from_slots,
    read_history,
    slot_bucket,
    teacher_forced_logits,
    train,
)
from maskconver.models.train_cli import main as cli_main  # noqa: E402

STEPS, CKPT_EVERY, BATCH = 40, 20, 4


# ------------------------------------------------------------------------------------------------------------
# pure helpers


def test_batch_indices_walk_a_fresh_permutation_each_epoch():
    n, b = 10, 4
    first_epoch = np.concatenate([batch_indices(n, b, s, seed=3) for s in range(3)])[:12]
    assert sorted(first_epoch[:10].tolist()) == list(range(10))  # every image once per epoch
    np.testing.assert_array_equal(batch_indices(n, b, 1, 3), batch_indices(n, b, 1, 3))  # pure
    assert not np.array_equal(
        np.concatenate([batch_indices(n, b, s, 3) for s in range(5)]),
        np.concatenate([batch_indices(n, b, s, 4) for s in range(5)]),
    )
    # step 2 straddles epochs 0 and 1: its last two entries start epoch 1's permutation
    epoch1 = np.random.default_rng([3, 1]).permutation(n)
    np.testing.assert_array_equal(batch_indices(n, b, 2, 3)[2:], epoch1[:2])


def test_learning_rate_warmup_then_cosine():
    assert learning_rate(0, 0.1, 10, 110) == 0.0
    assert learning_rate(5, 0.1, 10, 110) == pytest.approx(0.05)
    assert learning_rate(55, 0.1, 10, 110) == pytest.approx(0.05)  # cosine at the global step: half way
    assert learning_rate(110, 0.1, 10, 110) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(200, 0.1, 10, 110) == pytest.approx(0.0, abs=1e-12)


def test_slot_bucket_and_masks_from_slots():
    assert slot_bucket(3, 50) == 16 and slot_bucket(17, 50) == 32 and slot_bucket(49, 50) == 50
    slots = np.array([[[0, 1], [-1, 2]]], np.int32)  # [1, 2, 2]; slot 2 is past num_instances = 2
    m = masks_from_slots(tf.constant(slots), tf.constant([2]), 3).numpy()
    np.testing.assert_array_equal(m[0, :, :, 0], [[1, 0], [0, 0]])
    np.testing.assert_array_equal(m[0, :, :, 1], [[0, 1], [0, 0]])
    np.testing.assert_array_equal(m[0, :, :, 2], -np.ones((2, 2)))


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    base = ["--config", "nano", "--steps", "5", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as e:
        cli_main([*base[:2], "--data", "synthetic", "--steps", "0", "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli_main(["--config", "no_such_config", "--data", "synthetic", *base[2:]])
    assert e.value.code == 2 and "unknown config 'no_such_config'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli_main([*base, "--data", str(tmp_path / "missing")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli_main([*base, "--data", "synthetic", "--init", str(tmp_path / "nope.npz")])
    assert e.value.code == 2 and "--init" in capsys.readouterr().err


def test_train_rejects_bad_arguments(tmp_path):
    with pytest.raises(TrainError, match="steps must be a positive integer"):
        train("nano", tmp_path, 0, None)
    with pytest.raises(TrainError, match="does not exist"):
        train("nano", tmp_path / "missing", 5, None)
    with pytest.raises(TrainError, match="optimizer 'adam'"):
        train("nano", tmp_path, 5, None, optimizer="adam")


# ------------------------------------------------------------------------------------------------------------
# training runs


@pytest.fixture(scope="module")
def small_config(tmp_path_factory) -> Path:
    cfg = get_config("nano").with_input_size((64, 64))
    path = tmp_path_factory.mktemp("cfg") / "nano64.json"
    path.write_text(cfg.to_json())
    return path


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, small_config) -> Path:
    out = tmp_path_factory.mktemp("run") / "ref"
    argv = ["--config", str(small_config), "--data", "synthetic", "--num-images", "16", "--image-size", "64"]
    argv += ["--steps", str(STEPS), "--batch", str(BATCH), "--checkpoint-every", str(CKPT_EVERY)]
    argv += ["--out", str(out), "--seed", "0", "--quiet"]
    assert cli_main(argv) == 0
    return out


def test_cli_run_writes_data_checkpoints_and_model(reference_run):
    out = reference_run
    assert (out / "data" / "panoptic.json").exists() and len(list((out / "data" / "images").iterdir())) == 16
    assert json.loads((out / "latest.json").read_text()) == {"step": STEPS, "checkpoint": "ckpt-0000040.npz"}
    assert sorted(p.name for p in out.glob("ckpt-*.npz")) == ["ckpt-0000020.npz", "ckpt-0000040.npz"]
    model = load_checkpoint(out / "model.npz")  # a plain project checkpoint with its config embedded
    assert model.config.input_size == (64, 64) and model.config.name == "nano"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == STEPS and {"total", "center", "mask", "dice", "l2", "lr"} <= set(log[-1])


def test_loss_falls(reference_run):
    hist = read_history(reference_run / f"ckpt-{STEPS:07d}.npz")
    total = hist["total"]
    assert total.shape == (STEPS,) and np.all(np.isfinite(total))
    first, last = float(total[:5].mean()), float(total[-5:].mean())
    assert last < 0.75 * first, (first, last)
    # every term is a loss that training reduces (the centre loss starts at the -2.19 bias prior)
    for k in ("center", "mask", "dice"):
        assert hist[k][-5:].mean() < hist[k][:5].mean(), k
    np.testing.assert_allclose(
        hist["total"], hist["center"] + 5.0 * (hist["mask"] + hist["dice"]) + hist["l2"], rtol=1e-5
    )


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(reference_run, small_config, tmp_path):
    cfg = get_config(small_config)
    data = reference_run / "data"
    out = tmp_path / "resumed"

    def crash(step: int, losses: dict) -> None:
        if step == 25:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(
            cfg,
            data,
            STEPS,
            out,
            batch_size=BATCH,
            checkpoint_every=CKPT_EVERY,
            progress=False,
            on_step=crash,
        )
    assert json.loads((out / "latest.json").read_text())["step"] == CKPT_EVERY
    assert not (out / "model.npz").exists()

    res = train(cfg, data, STEPS, out, batch_size=BATCH, checkpoint_every=CKPT_EVERY, progress=False)
    assert res.resumed_from == CKPT_EVERY and res.step == STEPS
    assert [int(h["step"]) for h in res.history] == list(range(CKPT_EVERY + 1, STEPS + 1))

    ref_hist = read_history(reference_run / f"ckpt-{STEPS:07d}.npz")
    new_hist = read_history(out / f"ckpt-{STEPS:07d}.npz")
    np.testing.assert_array_equal(new_hist["total"], ref_hist["total"])  # same batches, same arithmetic
    ref_w, _, _ = read_checkpoint_arrays(reference_run / "model.npz")
    new_w, _, _ = read_checkpoint_arrays(out / "model.npz")
    assert ref_w.keys() == new_w.keys()
    for k in ref_w:  # weights, BN statistics and (through them) the optimiser state all carried over
        np.testing.assert_array_equal(new_w[k], ref_w[k], err_msg=k)
    assert any(not np.array_equal(new_w[k], build_model(cfg).get_weights_dict()[k]) for k in ref_w)

    # a broken latest.json falls back to the newest readable checkpoint
    (out / "latest.json").write_text("{not json")
    assert find_resume_checkpoint(out) == out / f"ckpt-{STEPS:07d}.npz"
    # already done: nothing to train, model.npz rewritten
    again = train(cfg, data, STEPS, out, batch_size=BATCH, checkpoint_every=CKPT_EVERY, progress=False)
    assert again.step == STEPS and again.history == []


def test_init_loads_every_matching_variable(reference_run, small_config):
    cfg = get_config(small_config)
    other = dataclasses.replace(cfg, num_classes=cfg.num_classes + 1)  # heatmap and class table differ
    model = build_model(other, seed=5)
    loaded, skipped = init_weights(model, reference_run / "model.npz")
    assert sorted(skipped) == [
        "class_embeddings/embeddings",
        "class_head/_classifier/bias",
        "class_head/_classifier/kernel",
    ]
    src, _, _ = read_checkpoint_arrays(reference_run / "model.npz")
    got = model.get_weights_dict()
    for k in loaded:
        np.testing.assert_array_equal(got[k], src[k])
    assert math.isclose(len(loaded) + len(skipped), len(got))


def test_teacher_forced_logits_match_the_runtime_mask_head():
    """Training gathers at GT centres exactly what the NumPy runtime computes for proposals there."""
    from maskconver.runtime.decode import mask_embeddings, mask_logits

    cfg = get_config("nano").with_input_size((64, 64))
    model = build_model(cfg, seed=1)
    rng = np.random.default_rng(0)
    weights = model.variables_by_name()
    for head in ("embedding_head", "per_pixel_embeddings_head"):  # fresh classifiers output ~1e-2
        kernel = weights[f"{head}/_classifier/kernel"]
        kernel.assign(rng.normal(0.0, 0.3, kernel.shape).astype(np.float32))
    images = tf.constant(rng.normal(size=(2, 64, 64, 3)).astype(np.float32))
    out = model.dense(images, training=True)  # batch statistics: O(1) features from a fresh model
    yx = np.array([[[0, 0], [7, 3], [2, 5]], [[4, 4], [1, 6], [7, 7]]], np.int32)
    classes = np.array([[1, 9, -1], [3, 3, 10]], np.int32)
    got = teacher_forced_logits(model, out, tf.constant(yx), tf.constant(classes)).numpy()
    head = model.mask_head_arrays()
    for b in range(2):
        centre = out["center_embeddings"].numpy()[b][yx[b, :, 0], yx[b, :, 1]]
        want = mask_logits(out["mask_features"].numpy()[b], mask_embeddings(centre, classes[b], head))
        assert np.abs(want).max() > 1.0  # a comparison of real magnitudes
        np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-4)


def test_the_checkpoint_carries_the_dataset_labels(reference_run):
    """The trainer records its dataset's categories in the checkpoint's config, one row per id; the converter
    labels the model with them (also for configs whose class count no named set fits)."""
    from maskconver.converter.convert import model_info_for
    from maskconver.models.panoptic_dataset import PanopticDataset

    cfg = load_checkpoint(reference_run / "model.npz").config
    table = PanopticDataset(reference_run / "data").category_table(cfg.num_classes)
    assert cfg.labels == tuple((c.id, c.name, c.isthing, tuple(c.color)) for c in table)
    custom = dataclasses.replace(cfg, name="custom", categories="coco")  # 11 classes: no COCO names fit
    info = model_info_for(custom, (64, 64), {})
    assert [(c.id, c.name, c.isthing) for c in info.categories] == [(i, n, t) for i, n, t, _ in cfg.labels]


def test_a_run_from_before_labels_resumes(reference_run, small_config, tmp_path):
    """A checkpoint whose embedded config has no labels (written before they were recorded) resumes."""
    import shutil

    from maskconver.models.checkpoint import CONFIG_KEY

    out = tmp_path / "old"
    shutil.copytree(reference_run, out)
    ckpt = out / f"ckpt-{STEPS:07d}.npz"
    with np.load(ckpt) as z:
        arrays = {k: z[k] for k in z.files}
    embedded = json.loads(bytes(arrays[CONFIG_KEY]).decode())
    del embedded["labels"]
    arrays[CONFIG_KEY] = np.frombuffer(json.dumps(embedded).encode(), dtype=np.uint8)
    np.savez(ckpt, **arrays)
    argv = [
        "--config",
        str(small_config),
        "--data",
        str(out / "data"),
        "--steps",
        str(STEPS),
        "--batch",
        str(BATCH),
    ]
    assert cli_main([*argv, "--out", str(out), "--seed", "0", "--quiet"]) == 0
    assert load_checkpoint(out / "model.npz").config.labels  # and the finished model has them


def test_recorded_labels_are_one_line_each():
    """Dataset category names are any strings; the recorded label keeps each on one line (labels.txt)."""
    from maskconver.models.train import with_dataset_labels
    from maskconver.runtime.model_info import Category

    class Data:
        def category_table(self, n):
            return [
                Category(i, "void" if i == 0 else f"cat\u2028{i}\r\nx", i == 1, (i, i, i)) for i in range(n)
            ]

    cfg = with_dataset_labels(get_config("nano"), Data())
    assert [row[1] for row in cfg.labels][:3] == ["void", "cat 1 x", "cat 2 x"]
