"""The maskconver model file: TFLite metadata writer, flatbuffer reader, ONNX metadata, bad files."""

from __future__ import annotations

import importlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from maskconver.converter.onnx_metadata import populate_onnx_metadata
from maskconver.converter.tflite_metadata import (
    MetadataError,
    add_metadata_buffer,
    append_zip,
    populate_metadata,
    strip_appended_zip,
)
from maskconver.runtime.model_file import mask_head_shapes, read_model_file
from maskconver.runtime.model_info import Category, ModelFileError, ModelInfo
from maskconver.runtime.tflite_flatbuffer import (
    TFLITE_METADATA_NAME,
    TFLiteFormatError,
    parse_model_metadata,
    parse_tflite,
)
from tiny_tflite import C, D, H, W, run_tflite, tiny_tflite

pytest.importorskip("tensorflow")
FBS = Path(__file__).parent / "data" / "tflite_metadata_subset.fbs"
META = {"name": "Tiny MaskConver", "version": "0.3", "author": "tests", "license": "MIT"}


def make_info(input_dtype: str = "uint8") -> ModelInfo:
    cats = [Category(i, f"class {i}", i >= 3, (10 * i, 20 * i, 30 * i)) for i in range(C)]
    return ModelInfo("tiny_test", (H, W), C, D, cats, input_dtype=input_dtype, conversion={"quant": "test"})


def make_head(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in mask_head_shapes(C, D).items()}


@pytest.fixture(scope="module")
def int8_pair() -> tuple[bytes, bytes]:
    plain = tiny_tflite("int8", dw_kernel=7)
    info = make_info()
    return plain, populate_metadata(plain, info, make_head(), info.labels(), META)


@pytest.fixture(scope="module")
def float_pair() -> tuple[bytes, bytes]:
    plain = tiny_tflite("float")
    info = make_info()
    return plain, populate_metadata(plain, info, make_head(), info.labels(), META)


def write(tmp_path: Path, data: bytes, name: str = "model.tflite") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["float", "int8"])
def test_outputs_bit_identical_after_metadata(which, float_pair, int8_pair):
    plain, with_md = float_pair if which == "float" else int8_pair
    image = np.random.default_rng(3).integers(0, 256, (1, H, W, 3), dtype=np.uint8)
    before, after = run_tflite(plain, image), run_tflite(with_md, image)
    assert sorted(before) == ["center_embeddings", "heatmap", "mask_features"]
    for k in before:
        assert before[k].dtype == after[k].dtype and before[k].shape == after[k].shape
        assert np.array_equal(before[k], after[k]), k
    assert before["heatmap"].shape == (1, H // 8, W // 8, C)
    assert np.ptp(before["heatmap"].astype(np.float32)) > 0  # not a degenerate all-constant output


def test_reader_reads_back_model_and_metadata(tmp_path, int8_pair):
    plain, with_md = int8_pair
    before, after = parse_tflite(plain), parse_tflite(with_md)
    # the graph is the same: ops, tensors, quantisation
    assert [o.op_name for o in after.subgraphs[0].operators] == [
        o.op_name for o in before.subgraphs[0].operators
    ]
    assert len(after.buffers) == len(before.buffers) + 1
    assert after.metadata[TFLITE_METADATA_NAME] == len(before.buffers)
    for name in before.metadata:  # the converter's own entries (min_runtime_version...) are kept
        assert after.metadata_bytes(name) == before.metadata_bytes(name)
    md = parse_model_metadata(after.metadata_bytes(TFLITE_METADATA_NAME))
    assert (md["name"], md["version"], md["author"], md["license"]) == (
        "Tiny MaskConver",
        "0.3",
        "tests",
        "MIT",
    )
    assert md["min_parser_version"] == "1.0.0"
    (sg,) = md["subgraphs"]
    (image,) = sg["inputs"]
    assert image["name"] == "image" and image["color_space"] == "RGB" and image["default_size"] == (W, H)
    assert np.allclose(image["normalization"]["mean"], [123.675, 116.28, 103.53])
    assert np.allclose(image["normalization"]["std"], [58.395, 57.12, 57.375])
    # output tensor metadata follows the subgraph's output order
    _, outs = after.io_names(0)
    assert [t["name"] for t in sg["outputs"]] == [outs[i] for i in after.subgraphs[0].outputs]
    heat = next(t for t in sg["outputs"] if t["name"] == "heatmap")
    assert [(f["name"], f["type"]) for f in heat["associated_files"]] == [
        ("labels.txt", "TENSOR_AXIS_LABELS")
    ]
    assert {(f["name"], f["type"]) for f in md["associated_files"]} == {
        ("maskconver.json", "DESCRIPTIONS"),
        ("mask_head.npz", "UNKNOWN"),
    }
    # tensor-level quantisation survives
    q = after.subgraphs[0].tensors[after.subgraphs[0].inputs[0]].quantization
    assert q is not None and q.scale.shape == (1,)

    mf = read_model_file(write(tmp_path, with_md))
    assert mf.format == "tflite" and mf.info.config_name == "tiny_test"
    assert mf.info.categories == make_info().categories and mf.info.conversion == {"quant": "test"}
    assert mf.labels == [f"class {i}" for i in range(C)]
    for k, v in make_head().items():
        assert mf.mask_head[k].dtype == np.float32 and np.array_equal(mf.mask_head[k], v), k
    assert [o.name for o in mf.outputs] == ["heatmap", "center_embeddings", "mask_features"]
    assert mf.inputs[0].dtype == "uint8" and mf.output("heatmap").dtype == "int8"
    assert mf.output("heatmap").scale.shape == (1,) and mf.metadata["name"] == "Tiny MaskConver"


def test_model_is_still_a_zip_with_the_associated_files(int8_pair):
    _, with_md = int8_pair
    with zipfile.ZipFile(io.BytesIO(with_md)) as zf:
        assert zf.testzip() is None
        infos = zf.infolist()
        assert [i.filename for i in infos] == ["labels.txt", "maskconver.json", "mask_head.npz"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)  # MediaPipe needs stored files
        assert json.loads(zf.read("maskconver.json"))["num_classes"] == C
        assert zf.read("labels.txt").decode().splitlines()[4] == "class 4"
        with np.load(io.BytesIO(zf.read("mask_head.npz"))) as npz:
            assert npz["class_embeddings"].shape == (C, D)


def test_populate_is_deterministic_and_repopulating_replaces(int8_pair):
    plain, with_md = int8_pair
    info = make_info()
    assert populate_metadata(plain, info, make_head(), info.labels(), META) == with_md
    again = populate_metadata(with_md, info, make_head(seed=5), info.labels(), {"name": "second"})
    m = parse_tflite(again)
    assert list(m.metadata).count(TFLITE_METADATA_NAME) == 1
    assert parse_model_metadata(m.metadata_bytes(TFLITE_METADATA_NAME))["name"] == "second"
    with zipfile.ZipFile(io.BytesIO(again)) as zf:
        assert len(zf.namelist()) == 3
        with np.load(io.BytesIO(zf.read("mask_head.npz"))) as npz:
            assert np.array_equal(npz["mlp_dense0_bias"], make_head(seed=5)["mlp_dense0_bias"])
    image = np.full((1, H, W, 3), 77, np.uint8)
    out_plain, out_again = run_tflite(plain, image), run_tflite(again, image)
    assert all(np.array_equal(out_plain[k], out_again[k]) for k in out_plain)


def test_standard_reader_generated_by_flatc(tmp_path, int8_pair):
    """Read the metadata with Python code that flatc generates from the public schema's table layout."""
    flatc = shutil.which("flatc")
    if flatc is None:
        pytest.skip("flatc not installed (apt-get install -y flatbuffers-compiler)")
    _, with_md = int8_pair
    meta = parse_tflite(with_md).metadata_bytes(TFLITE_METADATA_NAME)
    subprocess.run([flatc, "--python", "-o", str(tmp_path / "gen"), str(FBS)], check=True)
    (tmp_path / "meta.bin").write_bytes(meta)
    subprocess.run(
        [flatc, "--json", "--strict-json", "-o", str(tmp_path), str(FBS), "--", str(tmp_path / "meta.bin")],
        check=True,
    )
    as_json = json.loads((tmp_path / "meta.json").read_text())
    assert as_json["name"] == "Tiny MaskConver" and as_json["min_parser_version"] == "1.0.0"
    image_json = as_json["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert image_json["content"]["content_properties_type"] == "ImageProperties"
    assert image_json["process_units"][0]["options_type"] == "NormalizationOptions"

    sys.path.insert(0, str(tmp_path / "gen"))
    try:
        mm = importlib.import_module("tflite.ModelMetadata").ModelMetadata
        assert mm.ModelMetadataBufferHasIdentifier(meta, 0)
        root = mm.GetRootAs(meta, 0)
        assert root.Name() == b"Tiny MaskConver" and root.License() == b"MIT"
        sg = root.SubgraphMetadata(0)
        image = sg.InputTensorMetadata(0)
        assert image.Name() == b"image"
        content = image.Content()
        assert content.ContentPropertiesType() == 2  # ImageProperties
        props = importlib.import_module("tflite.ImageProperties").ImageProperties()
        table = content.ContentProperties()
        props.Init(table.Bytes, table.Pos)
        assert props.ColorSpace() == 1 and props.DefaultSize().Width() == W  # RGB
        unit = image.ProcessUnits(0)
        norm = importlib.import_module("tflite.NormalizationOptions").NormalizationOptions()
        table = unit.Options()
        norm.Init(table.Bytes, table.Pos)
        assert np.allclose(norm.MeanAsNumpy(), [123.675, 116.28, 103.53])
        assert np.allclose(norm.StdAsNumpy(), [58.395, 57.12, 57.375])
        names = [sg.OutputTensorMetadata(i).Name().decode() for i in range(sg.OutputTensorMetadataLength())]
        assert sorted(names) == ["center_embeddings", "heatmap", "mask_features"]
        heat = sg.OutputTensorMetadata(names.index("heatmap"))
        assert heat.AssociatedFiles(0).Name() == b"labels.txt" and heat.AssociatedFiles(0).Type() == 2
        files = {root.AssociatedFiles(i).Name(): root.AssociatedFiles(i).Type() for i in range(2)}
        assert files == {b"maskconver.json": 1, b"mask_head.npz": 0}
    finally:
        sys.path.remove(str(tmp_path / "gen"))
        for name in [n for n in sys.modules if n == "tflite" or n.startswith("tflite.")]:
            del sys.modules[name]


APT_TOOLS = "apt-get install -y flatbuffers-compiler libflatbuffers-dev g++"


def test_flatbuffers_cpp_verifier_accepts_the_model(tmp_path, int8_pair, float_pair):
    """The flatbuffers C++ Verifier (what LiteRT's Java API runs before loading) passes model and metadata."""
    flatc, cxx = shutil.which("flatc"), shutil.which("g++")
    if flatc is None or cxx is None or not Path("/usr/include/flatbuffers/flatbuffers.h").exists():
        pytest.skip(f"flatc, g++ or the flatbuffers headers are missing ({APT_TOOLS})")
    data = Path(__file__).parent / "data"
    for name in ("tflite_model_subset.fbs", "tflite_metadata_subset.fbs"):
        shutil.copy(data / name, tmp_path / name)
    subprocess.run(
        [flatc, "--cpp", "tflite_model_subset.fbs", "tflite_metadata_subset.fbs"], cwd=tmp_path, check=True
    )
    exe = tmp_path / "verify"
    src = data / "verify_tflite_metadata.cc"
    subprocess.run([cxx, "-std=c++17", "-O0", f"-I{tmp_path}", "-o", str(exe), str(src)], check=True)

    def verify(content: bytes) -> subprocess.CompletedProcess:
        path = write(tmp_path, content)
        return subprocess.run([str(exe), str(path)], capture_output=True, text=True)

    for plain, with_md in (int8_pair, float_pair):
        result = verify(with_md)
        assert result.returncode == 0, result.stdout
        assert (
            "model: ok" in result.stdout
            and "metadata: ok, name=Tiny MaskConver, aligned16=1" in result.stdout
        )
        assert "metadata: MISSING" in verify(plain).stdout
    _, with_md = int8_pair
    assert "model: INVALID" in verify(with_md[: len(with_md) // 2]).stdout  # the verifier does check


def test_litert_schema_reader_sees_the_metadata_entry(int8_pair):
    """LiteRT's own generated schema code finds TFLITE_METADATA and its buffer."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    _, with_md = int8_pair
    model = schema.Model.GetRootAs(with_md, 0)
    entries = {
        model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())
    }
    assert "min_runtime_version" in entries and TFLITE_METADATA_NAME in entries
    data = model.Buffers(entries[TFLITE_METADATA_NAME]).DataAsNumpy().tobytes()
    assert data[4:8] == b"M001" and parse_model_metadata(data)["name"] == "Tiny MaskConver"
    assert model.SubgraphsLength() == 1 and model.Subgraphs(0).OperatorsLength() == 10


def test_buffers_keep_their_alignment(int8_pair):
    """The original moves by a multiple of 16 bytes, so every weight keeps its alignment; ours is aligned."""
    plain, with_md = int8_pair
    before, after = parse_tflite(plain).buffers, parse_tflite(with_md).buffers
    shifts = {a.data_start - b.data_start for a, b in zip(after, before, strict=False) if b.data_size}
    assert len(shifts) == 1 and shifts.pop() % 16 == 0
    assert after[-1].data_start % 16 == 0 and after[-1].data_size > 100


def test_populate_rejects_mismatched_inputs(int8_pair):
    plain, _ = int8_pair
    info = make_info()
    with pytest.raises(MetadataError, match="labels given"):
        populate_metadata(plain, info, make_head(), info.labels()[:-1])
    head = make_head()
    head["class_embeddings"] = head["class_embeddings"][:, :-1]
    with pytest.raises(ModelFileError, match="class_embeddings has shape"):
        populate_metadata(plain, info, head, info.labels())
    wrong = ModelInfo("x", (64, 64), C, D, info.categories)
    with pytest.raises(MetadataError, match="model input image is uint8 \\(1, 32, 32, 3\\)"):
        populate_metadata(plain, wrong, make_head(), info.labels())
    with pytest.raises(MetadataError, match="unknown metadata keys"):
        populate_metadata(plain, info, make_head(), info.labels(), {"colour": "blue"})


# ------------------------------------------------------------------------------------------------------
# bad files
# ------------------------------------------------------------------------------------------------------
def test_empty_and_missing(tmp_path):
    with pytest.raises(ModelFileError, match="empty \\(0 bytes\\)"):
        read_model_file(write(tmp_path, b""))
    with pytest.raises(ModelFileError, match="no such model file"):
        read_model_file(tmp_path / "nope.tflite")
    with pytest.raises(ModelFileError, match="is a directory"):
        read_model_file(tmp_path)


def test_truncated(tmp_path, int8_pair):
    _, with_md = int8_pair
    zip_start = len(strip_appended_zip(with_md))
    cases = {
        5: "not a TFLite model",
        len(with_md) // 8: "truncated or corrupt",
        zip_start - 100: "truncated or corrupt",
        zip_start: "associated files .* missing or damaged",
        len(with_md) - 30: "missing or damaged",
    }
    for cut, message in cases.items():
        with pytest.raises(ModelFileError, match=message):
            read_model_file(write(tmp_path, with_md[:cut]))


def test_random_bytes_never_crash(tmp_path, int8_pair):
    rng = np.random.default_rng(7)
    with pytest.raises(ModelFileError, match="not a TFLite model"):
        read_model_file(write(tmp_path, rng.bytes(5000)))
    with pytest.raises(ModelFileError, match="unknown model format"):
        read_model_file(write(tmp_path, rng.bytes(5000), "model.bin"))
    for _ in range(40):  # random bytes behind a valid TFL3 header go through the flatbuffer parser
        data = rng.bytes(4) + b"TFL3" + rng.bytes(int(rng.integers(0, 3000)))
        with pytest.raises(ModelFileError):
            read_model_file(write(tmp_path, data))
    _, with_md = int8_pair
    for _ in range(40):  # flipped bytes: either still readable or a ModelFileError, never another error
        data = bytearray(with_md)
        for pos in rng.integers(0, len(data), 8):
            data[pos] ^= int(rng.integers(1, 256))
        try:
            read_model_file(write(tmp_path, bytes(data)))
        except ModelFileError:
            pass


def test_plain_tflite_is_not_a_maskconver_model(tmp_path, int8_pair):
    plain, _ = int8_pair
    with pytest.raises(ModelFileError, match="no TFLITE_METADATA .* plain TFLite model"):
        read_model_file(write(tmp_path, plain))


def test_metadata_removed(tmp_path, int8_pair):
    _, with_md = int8_pair
    # zip stripped off
    with pytest.raises(ModelFileError, match="missing or damaged"):
        read_model_file(write(tmp_path, strip_appended_zip(with_md)))
    # TFLITE_METADATA entry renamed away, zip left in place
    renamed = with_md.replace(b"TFLITE_METADATA", b"XFLITE_METADATA")
    with pytest.raises(ModelFileError, match="no TFLITE_METADATA"):
        read_model_file(write(tmp_path, renamed))
    # metadata points at an associated file the zip lacks
    files = _zip_files(with_md)
    del files["mask_head.npz"]
    with pytest.raises(ModelFileError, match="names the associated file mask_head.npz"):
        read_model_file(write(tmp_path, append_zip(strip_appended_zip(with_md), files)))


def _zip_files(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_edited_metadata(tmp_path, int8_pair):
    _, with_md = int8_pair
    base = strip_appended_zip(with_md)
    # a byte changed in place inside maskconver.json: the zip CRC catches it
    pos = with_md.rindex(b'"config_name"') + 16
    flipped = with_md[:pos] + bytes([with_md[pos] ^ 0x20]) + with_md[pos + 1 :]
    with pytest.raises(ModelFileError, match="maskconver.json in the model's zip is damaged"):
        read_model_file(write(tmp_path, flipped))
    # maskconver.json rewritten with a consistent zip: the recorded SHA-256 catches it
    files = _zip_files(with_md)
    d = json.loads(files["maskconver.json"])
    d["object_mask_threshold"] = 0.5
    files["maskconver.json"] = json.dumps(d).encode()
    with pytest.raises(ModelFileError, match="maskconver.json was edited after conversion"):
        read_model_file(write(tmp_path, append_zip(base, files)))
    # a metadata buffer whose claims disagree with the graph: caught by the graph check
    files = _zip_files(with_md)
    d = json.loads(files["maskconver.json"])
    d["num_classes"], d["categories"] = C + 1, d["categories"] + [d["categories"][0] | {"id": C}]
    files["maskconver.json"] = json.dumps(d).encode()
    files["labels.txt"] += b"extra\n"
    files["mask_head.npz"] = _edited_head(files["mask_head.npz"], C + 1)
    info = ModelInfo.from_json(files["maskconver.json"])
    from maskconver.converter.tflite_metadata import build_metadata_flatbuffer
    from maskconver.runtime.model_file import sha256_hex

    md = build_metadata_flatbuffer(
        info, META | {"description": "x"}, {k: sha256_hex(v) for k, v in files.items()}
    )
    forged = append_zip(add_metadata_buffer(base, TFLITE_METADATA_NAME, md), files)
    with pytest.raises(
        ModelFileError, match="output heatmap has shape \\(1, 4, 4, 5\\), but maskconver.json"
    ):
        read_model_file(write(tmp_path, forged))
    # corrupt metadata flatbuffer
    broken = append_zip(
        add_metadata_buffer(base, TFLITE_METADATA_NAME, b"\x08\x00\x00\x00M001\xff\xff"), files
    )
    with pytest.raises(ModelFileError, match="TFLITE_METADATA"):
        read_model_file(write(tmp_path, broken))


def _edited_head(npz: bytes, num_classes: int) -> bytes:
    from maskconver.runtime.model_file import npz_bytes

    with np.load(io.BytesIO(npz)) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["class_embeddings"] = np.zeros((num_classes, D), np.float32)
    return npz_bytes(arrays)


def test_tflite_format_error_is_a_model_file_error():
    with pytest.raises(ModelFileError):
        parse_tflite(b"\x00" * 3)
    assert issubclass(TFLiteFormatError, ModelFileError)


# ------------------------------------------------------------------------------------------------------
# ONNX
# ------------------------------------------------------------------------------------------------------
def _tiny_onnx() -> bytes:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["xf"], ["nchw"], perm=[0, 3, 1, 2]),
    ]
    inits = []
    for name, ch in (("heatmap", C), ("center_embeddings", D), ("mask_features", D)):
        w = numpy_helper.from_array(rng.normal(0, 0.01, (ch, 3, 8, 8)).astype(np.float32), f"w_{name}")
        inits.append(w)
        nodes.append(helper.make_node("Conv", ["nchw", f"w_{name}"], [f"{name}_nchw"], strides=[8, 8]))
        nodes.append(helper.make_node("Transpose", [f"{name}_nchw"], [name], perm=[0, 2, 3, 1]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, H, W, 3])],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, H // 8, W // 8, ch])
            for n, ch in (("heatmap", C), ("center_embeddings", D), ("mask_features", D))
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_onnx_metadata_roundtrip_and_bad_files(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    plain = _tiny_onnx()
    info = make_info()
    with_md = populate_onnx_metadata(plain, info, make_head(), meta=META)  # labels default to info.labels()
    image = np.random.default_rng(4).integers(0, 256, (1, H, W, 3), dtype=np.uint8)

    def run(data: bytes) -> list[np.ndarray]:
        return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"image": image})

    assert all(np.array_equal(a, b) for a, b in zip(run(plain), run(with_md), strict=True))
    session = ort.InferenceSession(with_md, providers=["CPUExecutionProvider"])
    assert "maskconver.json" in session.get_modelmeta().custom_metadata_map

    mf = read_model_file(write(tmp_path, with_md, "m.onnx"))
    assert mf.format == "onnx" and mf.info.config_name == "tiny_test" and mf.labels == info.labels()
    assert all(np.array_equal(mf.mask_head[k], v) for k, v in make_head().items())
    assert [o.name for o in mf.outputs] == ["heatmap", "center_embeddings", "mask_features"]
    assert mf.metadata["author"] == "tests"

    with pytest.raises(ModelFileError, match="no maskconver.json in the ONNX metadata_props"):
        read_model_file(write(tmp_path, plain, "m.onnx"))
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        read_model_file(write(tmp_path, np.random.default_rng(1).bytes(3000), "m.onnx"))
    import onnx

    model = onnx.ModelProto.FromString(with_md)
    for p in model.metadata_props:
        if p.key == "maskconver.json":
            p.value = p.value.replace('"stride": 8', '"stride": 8 ')
    with pytest.raises(ModelFileError, match="maskconver.json was edited"):
        read_model_file(write(tmp_path, model.SerializeToString(), "m.onnx"))
