"""Models: the seed network as the notebook had it; the default takes any window length, demographics optional."""

import pytest
import torch

from p2p_stream.errors import ConfigError
from p2p_stream.model.networks import build_model, count_parameters


def test_seed_lstm_is_the_notebooks_network():
    model = build_model("seed-lstm", {"outputs": 1})
    assert count_parameters(model) == 5_429_761
    lstm = model.lstm
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.dropout, lstm.bidirectional) == (
        1,
        512,
        3,
        0.2,
        False,
    )
    widths = [m.out_features for m in model.head if isinstance(m, torch.nn.Linear)]
    drops = [m.p for m in model.head if isinstance(m, torch.nn.Dropout)]
    assert widths == [256, 128, 64, 1] and drops == [0.2, 0.15, 0.1]
    assert model(torch.randn(2, 50)).shape == (2, 1)


@pytest.mark.parametrize("length", [262, 525, 1250])
def test_default_model_takes_any_window_length(length):
    model = build_model("conv-lstm").eval()
    with torch.inference_mode():
        assert model(torch.randn(3, length)).shape == (3, 2)


def test_default_model_uses_demographics_only_when_configured():
    torch.manual_seed(0)
    x = torch.randn(2, 262)
    old = torch.tensor([[1.5, 1.0, 0.0, 1.0]] * 2)
    young = torch.tensor([[-1.5, 0.0, 1.0, 1.0]] * 2)
    with_meta = build_model("conv-lstm", {"use_demographics": True}).eval()
    without = build_model("conv-lstm", {"use_demographics": False}).eval()
    with torch.inference_mode():
        assert not torch.allclose(with_meta(x, old), with_meta(x, young))
        assert torch.allclose(with_meta(x, None), with_meta(x, torch.zeros(2, 4)))  # None means "unknown"
        assert torch.allclose(without(x, old), without(x, young))


def test_unknown_model_or_parameter():
    with pytest.raises(ConfigError, match="unknown model 'transformer'"):
        build_model("transformer")
    with pytest.raises(ConfigError, match=r"no parameter\(s\) \['hiden'\]"):
        build_model("conv-lstm", {"hiden": 3})
