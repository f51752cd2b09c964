"""The classifier's network functions: layout, initialisation and forward equal PyTorch's own modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from consortium.fl import networks
from consortium.fl.algorithms.classifier import Classifier
from consortium.fl.core import FLError, LocalData, parse_hyperparams
from consortium.fl.networks import ConvSpec

CONV = {"input_shape": [3, 8, 8], "channels": [4, 6], "kernel_size": 3, "pool": 2}


def reference_module(conv: ConvSpec, layers: list[int], activation: type[nn.Module]) -> nn.Sequential:
    """The same network built from nn modules, in the same layer order."""
    modules: list[nn.Module] = []
    in_channels = conv.input_shape[0]
    for out_channels in conv.channels:
        modules += [
            nn.Conv2d(in_channels, out_channels, conv.kernel_size, padding=conv.kernel_size // 2),
            activation(),
            nn.MaxPool2d(conv.pool),
        ]
        in_channels = out_channels
    modules.append(nn.Flatten())
    widths = [in_channels * (conv.input_shape[1] // conv.pool ** len(conv.channels)) ** 2, *layers[1:]]
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if i > 0:
            modules.append(activation())
        modules.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*modules)


def test_layout_names_shapes_and_fan_in() -> None:
    conv = ConvSpec.model_validate(CONV)
    network = networks.layout([192, 16, 5], conv)
    assert [(layer.weight, layer.weight_shape, layer.fan_in) for layer in network] == [
        ("conv.0.weight", (4, 3, 3, 3), 27),
        ("conv.1.weight", (6, 4, 3, 3), 36),
        ("layers.0.weight", (16, 24), 24),
        ("layers.2.weight", (5, 16), 16),
    ]
    assert networks.param_names(networks.layout([4, 3])) == ["layers.0.weight", "layers.0.bias"]


def test_forward_equals_the_nn_modules_with_the_same_weights() -> None:
    conv = ConvSpec.model_validate(CONV)
    layers = [192, 16, 5]
    network = networks.layout(layers, conv)
    params = networks.init_params(network, torch.Generator().manual_seed(0))
    module = reference_module(conv, layers, nn.Tanh)
    module_params = [p for m in module if isinstance(m, nn.Conv2d | nn.Linear) for p in (m.weight, m.bias)]
    with torch.no_grad():
        for tensor, name in zip(module_params, networks.param_names(network), strict=True):
            tensor.copy_(params[name])
    x = torch.randn(7, 3, 8, 8)
    expected = module(x)
    got = networks.forward(network, "tanh", params, x.reshape(7, -1), conv)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_init_is_bounded_by_the_fan_in_and_seeded() -> None:
    network = networks.layout([192, 16, 5], ConvSpec.model_validate(CONV))
    first = networks.init_params(network, torch.Generator().manual_seed(1))
    again = networks.init_params(network, torch.Generator().manual_seed(1))
    for layer in network:
        assert float(first[layer.weight].abs().max()) <= layer.fan_in**-0.5
        assert torch.equal(first[layer.weight], again[layer.weight])


@pytest.mark.parametrize(
    ("conv", "layers", "message"),
    [
        (CONV, [100, 5], r"layers\[0\] \(100\) must equal .* \(192\)"),
        (CONV | {"channels": [4, 4, 4, 4]}, [192, 5], "shrink the 8x8 input to nothing"),
        (CONV | {"kernel_size": 2}, [192, 5], "must be odd"),
        (CONV | {"channels": []}, [192, 5], "one or more channel counts"),
        (CONV | {"input_shape": [3, 0, 8]}, [192, 5], "every side must be >= 1"),
    ],
)
def test_impossible_conv_settings_name_the_field(conv: dict, layers: list[int], message: str) -> None:
    with pytest.raises(FLError, match=message) as caught:
        parse_hyperparams(Classifier(), {"layers": layers, "conv": conv})
    assert "classifier" in str(caught.value)


def test_cnn_classifier_learns_image_rows_given_flat_or_shaped() -> None:
    hp = parse_hyperparams(
        Classifier(), {"layers": [192, 3], "conv": CONV | {"channels": [4]}, "lr": 0.1, "local_epochs": 5}
    )
    generator = torch.Generator().manual_seed(0)
    patterns = torch.randn(3, 3, 8, 8, generator=generator)
    y = torch.randint(0, 3, (60,), generator=generator)
    images = patterns[y] + 0.5 * torch.randn(60, 3, 8, 8, generator=generator)
    params = Classifier().init(hp, 192, seed=0)
    shaped = Classifier().local_update(hp, params, LocalData(images, y), seed=0)
    flat = Classifier().local_update(hp, params, LocalData(images.reshape(60, -1), y), seed=0)
    for name in shaped.tensors:
        assert torch.equal(shaped.tensors[name], flat.tensors[name])
    assert Classifier().evaluate(hp, shaped.tensors, LocalData(images, y)).metrics["accuracy"] >= 0.9
    with pytest.raises(FLError, match=r"expects \[n, 3, 8, 8\]"):
        Classifier().local_update(hp, params, LocalData(images.reshape(60, 3, 4, 16), y), seed=0)
