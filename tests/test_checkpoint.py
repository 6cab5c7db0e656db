import numpy as np
import pytest
from maskconver.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_arrays,
    save_checkpoint,
)
from maskconver.models.config import get_config


def test_both_model_garden_layouts_hold_the_same_weights(mg_fixtures):
    a, _, kind_a = read_checkpoint_arrays(mg_fixtures / "train_ckpt")
    b, _, kind_b = read_checkpoint_arrays(mg_fixtures / "export_ckpt")
    assert (kind_a, kind_b) == ("modelgarden-train", "modelgarden-export")
    model = load_checkpoint(mg_fixtures / "train_ckpt", get_config("mobilenet_mh_256"))
    w = model.get_weights_dict()
    assert len(w) == 371
    for k, v in w.items():
        np.testing.assert_array_equal(v, b[k])
    # the unused 1280-channel backbone tail is in the file and skipped
    assert "backbone/layer_with_weights-18/_conv0/kernel" in a


def test_wrong_config_names_the_variables(mg_fixtures):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(mg_fixtures / "export_ckpt", get_config("nano"))
    msg = str(e.value)
    assert "wrong shape" in msg and "backbone/layer_with_weights-0/_conv0/kernel is [3, 3, 3, 32]" in msg
    assert "--config" in msg


def test_project_checkpoint_round_trip(tmp_path):
    from maskconver.models.architecture import build_model

    m = build_model(get_config("nano"), seed=3)
    path = save_checkpoint(m, tmp_path / "m.npz")
    m2 = load_checkpoint(path)  # config embedded
    assert m2.config == m.config
    for k, v in m.get_weights_dict().items():
        np.testing.assert_array_equal(v, m2.get_weights_dict()[k])
    assert not list(tmp_path.glob(".*tmp"))


def test_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a maskconver checkpoint"):
        load_checkpoint(tmp_path / "other.npz")
    (tmp_path / "dir").mkdir()
    with pytest.raises(CheckpointError, match="neither"):
        load_checkpoint(tmp_path / "dir", get_config("nano"))


def test_truncated_project_checkpoint_is_all_or_nothing(tmp_path):
    from maskconver.models.architecture import build_model

    m = build_model(get_config("nano"))
    path = save_checkpoint(m, tmp_path / "m.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("mlp/")}
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(CheckpointError, match="missing: mlp/dense/0/bias"):
        load_checkpoint(tmp_path / "partial.npz")
