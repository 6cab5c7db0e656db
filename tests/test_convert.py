"""The converter end to end on real models: real TFLite converter, LiteRT, ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from maskconver.converter.cli import main as convert_main
from maskconver.converter.convert import ConvertOptions, convert
from maskconver.models.architecture import build_model
from maskconver.models.checkpoint import save_checkpoint
from maskconver.models.config import get_config

NAME = "maskconver_nano_128x128"


@pytest.fixture(scope="module")
def nano_ckpt(tmp_path_factory) -> Path:
    model = build_model(get_config("nano"), seed=1)
    # Non-trivial batch-norm statistics so folding is exercised.
    rng = np.random.default_rng(1)
    w = model.get_weights_dict()
    for k in w:
        if k.endswith("moving_variance"):
            w[k] = rng.uniform(0.5, 1.5, w[k].shape).astype(np.float32)
        elif k.endswith(("moving_mean", "beta")):
            w[k] = rng.normal(0, 0.2, w[k].shape).astype(np.float32)
    model.set_weights_dict(w)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "nano.npz")


@pytest.fixture(scope="module")
def int8_dir(nano_ckpt, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("int8")
    report = convert(
        nano_ckpt, None, out, ConvertOptions(num_calibration=24, num_holdout=4, onnx=True, progress=False)
    )
    return out, report


def test_int8_model_file_is_complete_and_delegate_friendly(int8_dir):
    from maskconver.runtime.model_file import read_model_file

    out, report = int8_dir
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{NAME}_int8.onnx", f"{NAME}_int8.tflite", "report.json", "report.md"]
    mf = read_model_file(out / f"{NAME}_int8.tflite")
    assert mf.info.config_name == "nano" and mf.info.input_size == (128, 128)
    assert (
        mf.info.conversion["quantization"] == "int8" and mf.info.conversion["calibration"]["num_images"] == 24
    )
    assert mf.inputs[0].dtype == "uint8"
    assert mf.mask_head["class_embeddings"].shape == (mf.info.num_classes, 32)
    d = report["delegates"]
    assert d["xnnpack_partitions"] == 1 and d["ok"]
    assert set(report["ops"]) <= {
        "ADD",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "MEAN",
        "PAD",
        "QUANTIZE",
        "RESIZE_BILINEAR",
        "STRIDED_SLICE",
    }
    assert "TOPK_V2" not in report["ops"] and report["ops"]["DEPTHWISE_CONV_2D"] > 0
    for k, v in report["agreement"].items():
        assert v["cosine"] > 0.9, k
        # the ONNX int8 (QDQ) export is measured on the same held-out images, within a few dB of TFLite's
        assert abs(report["agreement_onnx"][k]["sqnr_db"] - v["sqnr_db"]) < 6.0, k
    on_disk = json.loads((out / "report.json").read_text())
    assert "SQNR dB (ONNX int8)" in (out / "report.md").read_text()
    assert on_disk["model"]["name"] == f"{NAME}_int8"
    assert "SQNR" in (out / "report.md").read_text()


def test_no_depthwise_above_25_taps_after_lowering(int8_dir):
    from maskconver.runtime.tflite_flatbuffer import parse_tflite

    out, _ = int8_dir
    model = parse_tflite((out / f"{NAME}_int8.tflite").read_bytes())
    sg = model.subgraphs[0]
    taps = []
    for op in sg.operators:
        if op.op_name == "DEPTHWISE_CONV_2D":
            shape = sg.tensors[op.inputs[1]].shape
            taps.append(shape[1] * shape[2])
    assert taps and max(taps) <= 25


def test_lowering_is_exact_in_float(nano_ckpt):
    import tensorflow as tf
    from maskconver.converter.inference_graph import build_inference_fn
    from maskconver.models.checkpoint import load_checkpoint

    model = load_checkpoint(nano_ckpt)
    img = np.random.default_rng(0).integers(0, 256, (1, 128, 128, 3)).astype(np.float32)
    a = build_inference_fn(model, lower_depthwise=False)(tf.constant(img))
    b = build_inference_fn(model, lower_depthwise=True)(tf.constant(img))
    norm = (img - np.array([123.675, 116.28, 103.53], np.float32)) / np.array(
        [58.395, 57.12, 57.375], np.float32
    )
    ref = model.dense(norm, training=False)
    for k in a:
        scale = np.abs(ref[k].numpy()).max()
        assert np.abs(a[k].numpy() - ref[k].numpy()).max() / scale < 1e-5
        assert np.abs(b[k].numpy() - a[k].numpy()).max() / scale < 1e-6


def test_onnx_int8_runs_in_onnxruntime(int8_dir):
    import onnxruntime as ort
    from maskconver.runtime.model_file import read_model_file

    out, _ = int8_dir
    path = out / f"{NAME}_int8.onnx"
    mf = read_model_file(path)
    conversion = mf.info.conversion
    assert conversion["quantization"] == "int8" and conversion["format"] == "onnx"
    # its own quantiser's record, not the TFLite model's fitted ranges (which the TFLite twin keeps)
    assert conversion["lowered_ranges_refined"] is None and "QDQ" in conversion["onnx_quantization"]
    assert (
        read_model_file(out / f"{NAME}_int8.tflite").info.conversion["lowered_ranges_refined"]["tensors"] > 0
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert any(n.op_type == "QuantizeLinear" for n in __import__("onnx").load(str(path)).graph.node)
    img = np.random.default_rng(2).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": img}), strict=True))
    assert outs["heatmap"].shape == (1, 16, 16, mf.info.num_classes)


def test_fp32_onnx_matches_tflite(nano_ckpt, tmp_path):
    # export_onnx itself raises if ONNX Runtime differs from the float TFLite model by more than 1e-4.
    report = convert(
        nano_ckpt, None, tmp_path, ConvertOptions(quantization="fp32", onnx=True, progress=False)
    )
    assert f"{NAME}_fp32.onnx" in report["files"] and "agreement" not in report


def test_cli_errors_leave_nothing_behind(nano_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert convert_main([str(tmp_path / "missing.npz"), "-o", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    mg = Path(__file__).resolve().parents[2] / "shared/fixtures/modelgarden/export_ckpt"
    if mg.exists():
        assert convert_main([str(mg), "--config", "nano", "-o", str(out)]) == 1
        assert "does not fit this config" in capsys.readouterr().err
    assert convert_main([str(nano_ckpt), "--config", "nope", "-o", str(out)]) == 1
    assert "unknown config" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert convert_main([str(nano_ckpt), "--calibration", str(empty), "-o", str(out)]) == 1
    assert "no images" in capsys.readouterr().err
    assert not out.exists() or not any(p.suffix == ".tflite" for p in out.iterdir())
    assert convert_main([str(nano_ckpt), "--input-size", "100", "-o", str(out)]) == 2


def test_unwritable_output_is_a_clear_error(nano_ckpt, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert convert_main([str(nano_ckpt), "--fp32", "-o", str(blocker / "sub")]) == 1
    assert "cannot write to output folder" in capsys.readouterr().err


def test_failed_conversion_keeps_the_previous_good_model(nano_ckpt, tmp_path, int8_dir, capsys):
    good_dir, _ = int8_dir
    out = tmp_path / "models"
    out.mkdir()
    good = out / f"{NAME}_int8.tflite"
    good.write_bytes((good_dir / f"{NAME}_int8.tflite").read_bytes())
    before = good.read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert convert_main([str(nano_ckpt), "--int8", "--calibration", str(empty), "-o", str(out)]) == 1
    assert good.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [good.name]


def test_pq_gate_reports_and_fails_on_drop(nano_ckpt, tmp_path, capsys):
    from maskconver.models.synthetic import generate_synthetic_dataset

    val = tmp_path / "val"
    generate_synthetic_dataset(val, 4, seed=77, image_size=(128, 128))
    out = tmp_path / "out"
    report = convert(
        nano_ckpt,
        None,
        out,
        ConvertOptions(num_calibration=8, num_holdout=2, val=str(val), progress=False),
    )
    pq = report["pq"]
    assert set(pq) == {"float", "quantized", "drop"}
    assert 0.0 <= pq["float"]["pq"] <= 100.0 and pq["drop"] == pytest.approx(
        pq["float"]["pq"] - pq["quantized"]["pq"]
    )
    # A gate below any possible drop fails the command and writes nothing.
    out2 = tmp_path / "out2"
    code = convert_main(
        [
            str(nano_ckpt),
            "--num-calibration",
            "8",
            "--val",
            str(val),
            "--max-pq-drop",
            "-1",
            "-o",
            str(out2),
            "-q",
        ]
    )
    assert code == 1 and "more than --max-pq-drop" in capsys.readouterr().err
    assert not out2.exists()  # no model, and the output folder it made is removed again (it was empty)


def test_the_lowering_tensors_get_fitted_int8_ranges_and_nothing_else_changes(int8_dir, nano_ckpt):
    """Every band and partial sum of the 6 lowered convs is found by name and narrowed; no other tensor moves."""
    from maskconver.runtime.model_file import read_model_file
    from maskconver.runtime.tflite_flatbuffer import parse_tflite

    out, report = int8_dir
    mf = read_model_file(out / f"{NAME}_int8.tflite")
    record = mf.info.conversion["lowered_ranges_refined"]
    assert record["tensors"] == 6 * 4 and record["not_found"] == []  # 3 bands + 1 partial sum per 7x7 conv
    assert record["narrowed"] >= 18  # a tensor whose min..max is already the best fit keeps it
    assert report["calibration"]["lowered_ranges_refined"] == record  # the report says it too
    md = (out / "report.md").read_text()
    assert f"{record['narrowed']} of 24 band and partial-sum tensors narrowed" in md
    refined = parse_tflite((out / f"{NAME}_int8.tflite").read_bytes()).subgraphs[0]
    plain_dir = out.parent / "plain"
    convert(
        nano_ckpt,
        None,
        plain_dir,
        ConvertOptions(num_calibration=24, num_holdout=4, refine_lowered_ranges=False, progress=False),
    )
    plain = parse_tflite((plain_dir / f"{NAME}_int8.tflite").read_bytes()).subgraphs[0]
    assert [t.name for t in plain.tensors] == [t.name for t in refined.tensors]
    moved = []
    for a, b in zip(plain.tensors, refined.tensors, strict=True):
        if a.quantization is None:
            assert b.quantization is None
            continue
        if not np.array_equal(a.quantization.scale, b.quantization.scale):
            moved.append(a.name.split(";")[0])
            # narrowed: a finer step, and zero still exactly representable
            assert b.quantization.scale[0] < a.quantization.scale[0]
            assert -128 <= b.quantization.zero_point[0] <= 127
    assert len(moved) == record["narrowed"] and all(n.startswith("mclowered_") for n in moved)


def test_fp16_model_converts_and_runs(nano_ckpt, tmp_path):
    """``--fp16``: float16 weights behind DEQUANTIZE ops count as constant weights for every delegate, and the
    input CAST is the I/O boundary wherever it sits in the op order; the model agrees with fp32 in LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    report = convert(nano_ckpt, None, tmp_path / "fp16", ConvertOptions(quantization="fp16", progress=False))
    d = report["delegates"]
    assert d["ok"] and not any(d["per_delegate"].values())
    assert report["ops"]["DEQUANTIZE"] > 50  # the float16 weights
    assert all(any("CAST" in w for w in d["perf_warnings"][k]) for k in ("gpu", "nnapi", "xnnpack"))
    convert(nano_ckpt, None, tmp_path / "fp32", ConvertOptions(quantization="fp32", progress=False))
    img = np.random.default_rng(3).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    outs = []
    for mode in ("fp16", "fp32"):
        interp = Interpreter(model_path=str(tmp_path / mode / f"{NAME}_{mode}.tflite"))
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], img)
        interp.invoke()
        outs.append({o["name"]: interp.get_tensor(o["index"]) for o in interp.get_output_details()})
    for name, a in outs[1].items():
        b = outs[0][name]
        assert b.shape == a.shape and np.abs(b - a).max() <= 0.02 * np.abs(a).max() + 1e-3, name


def test_a_config_without_category_names_is_refused_before_converting(tmp_path, capsys):
    """11 classes, no recorded labels and the COCO name set: a clear error (exit 1) instead of a traceback
    after minutes of calibration, and nothing written."""
    import dataclasses

    cfg = dataclasses.replace(get_config("nano"), name="custom11", categories="coco")
    ckpt = save_checkpoint(build_model(cfg, seed=0), tmp_path / "custom.npz")
    out = tmp_path / "out"
    assert convert_main([str(ckpt), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "has 11 classes and no category names" in err and "maskconver-train" in err
    assert "calibrat" not in err.split("error:")[0].lower()  # refused before calibration began
    assert not out.exists()


def test_recorded_labels_survive_a_config_given_at_conversion(tmp_path):
    """A checkpoint trained with labels keeps them when ``--config`` is given too (same class count)."""
    import dataclasses

    from maskconver.runtime.model_file import read_model_file

    base = get_config("nano")
    rows = tuple((i, f"mine {i}", i in base.thing_ids, (10 * i, 0, 0)) for i in range(base.num_classes))
    ckpt = save_checkpoint(build_model(dataclasses.replace(base, labels=rows), seed=0), tmp_path / "mine.npz")
    out = tmp_path / "out"
    assert convert_main([str(ckpt), "--config", "nano", "--fp32", "-o", str(out)]) == 0
    mf = read_model_file(out / f"{NAME}_fp32.tflite")
    assert [c.name for c in mf.info.categories] == [r[1] for r in rows]
    assert mf.labels == [r[1] for r in rows]


def test_a_label_that_would_split_into_two_lines_is_refused():
    from maskconver.runtime.model_file import ModelFileError, labels_text

    assert labels_text(["void", "a b"]) == "void\na b\n"
    for sep in ("\n", "\r", "\u2028", "\x85", "\x0b", "\x0c", "\x1c"):
        with pytest.raises(ModelFileError, match="label 1 .* line break"):
            labels_text(["void", f"a{sep}b"])
