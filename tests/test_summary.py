import pytest
from maskconver.models.config import get_config
from maskconver.models.summary import format_summary, model_summary


@pytest.mark.parametrize("name, macs", [("mobilenet_mh_256", 1.5e9), ("mobilenet_mh_640", 9.58e9)])
def test_size_matches_the_paper(name, macs):
    s = model_summary(get_config(name))
    assert abs(s["total_params"] / 3.4e6 - 1) < 0.02
    assert abs(s["total_macs"] / macs - 1) < 0.05
    h = s["input_size"][0] // 8
    assert s["outputs"] == {
        "heatmap": [1, h, h, 201],
        "center_embeddings": [1, h, h, 256],
        "mask_features": [1, h, h, 256],
    }
    text = format_summary(s)
    assert "paper: 3.4M params" in text and "backbone" in text
