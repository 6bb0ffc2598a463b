"""Torch modules (networks only) behind the neural estimators of :mod:`geneinfer.models.neural`.

Every module maps a ``(batch, n_in)`` float tensor of standardized landmark expression to a
``(batch, n_out)`` tensor of standardized target expression. Each is rebuilt from a JSON-able
config by :func:`build_module`, so saved models hold weights + config and never pickles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}


def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {list(_ACTIVATIONS)}"
        ) from None


def _hidden_stack(
    n_in: int, widths: Sequence[int], activation: str, dropout: float
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(n_in, int(width)), _activation(activation)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        n_in = int(width)
    return nn.Sequential(*layers)


class MLPNet(nn.Module):
    """D-GEX network: ``len(hidden)`` fully connected layers, activation, dropout, linear output.

    Parameters
    ----------
    n_in, n_out
        Number of landmark inputs and target outputs.
    hidden
        Width of each hidden layer, e.g. ``(3000,)`` or ``(9000, 9000, 9000)``.
    activation
        ``"tanh"`` (D-GEX), ``"relu"``, ``"gelu"`` or ``"sigmoid"``.
    dropout
        Dropout rate after each hidden layer.
    zero_init_output
        Start with a zero output layer, so the network's initial output is exactly 0 (used by
        the residual model to start at its linear solution).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        hidden: Sequence[int] = (3000,),
        activation: str = "tanh",
        dropout: float = 0.1,
        zero_init_output: bool = False,
    ) -> None:
        super().__init__()
        self.body = _hidden_stack(n_in, hidden, activation, dropout)
        last = int(hidden[-1]) if len(hidden) else n_in
        self.out = nn.Linear(last, n_out)
        if zero_init_output:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class BottleneckNet(nn.Module):
    """Autoencoder-style network: encoder -> narrow code -> decoder -> all targets.

    The code layer (``bottleneck`` units, linear) forces a low-dimensional representation of
    the expression state, as in autoencoder approaches to expression imputation.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        encoder: Sequence[int] = (1000,),
        bottleneck: int = 128,
        decoder: Sequence[int] = (1000,),
        activation: str = "tanh",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = _hidden_stack(n_in, encoder, activation, dropout)
        enc_out = int(encoder[-1]) if len(encoder) else n_in
        self.code = nn.Linear(enc_out, int(bottleneck))
        self.decoder = _hidden_stack(int(bottleneck), decoder, activation, dropout)
        dec_out = int(decoder[-1]) if len(decoder) else int(bottleneck)
        self.out = nn.Linear(dec_out, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.decoder(self.code(self.encoder(x))))


class ConvNet(nn.Module):
    """1-D CNN over the (re-ordered) landmark vector, then a dense head to all targets.

    Two strided convolution blocks turn ``n_in`` landmarks into ``channels[-1]`` feature maps
    of length about ``n_in / 4``; a hidden dense layer and a linear layer give the targets.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 9,
        stride: int = 2,
        hidden: int = 1000,
        activation: str = "relu",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        convs: list[nn.Module] = []
        c_in, length = 1, n_in
        pad = kernel_size // 2
        for c_out in channels:
            convs += [
                nn.Conv1d(c_in, int(c_out), kernel_size, stride=stride, padding=pad),
                _activation(activation),
            ]
            c_in = int(c_out)
            length = (length + 2 * pad - kernel_size) // stride + 1
        self.convs = nn.Sequential(*convs)
        head: list[nn.Module] = [nn.Linear(c_in * length, int(hidden)), _activation(activation)]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(int(hidden), n_out))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.convs(x.unsqueeze(1))
        return self.head(feats.flatten(1))


MODULES: dict[str, type[nn.Module]] = {
    "mlp": MLPNet,
    "bottleneck": BottleneckNet,
    "conv": ConvNet,
}


def build_module(kind: str, n_in: int, n_out: int, **config: Any) -> nn.Module:
    """Instantiate module ``kind`` (a key of :data:`MODULES`) from its JSON config."""
    try:
        cls = MODULES[kind]
    except KeyError:
        raise ValueError(f"unknown network kind {kind!r}; choose one of {list(MODULES)}") from None
    return cls(int(n_in), int(n_out), **config)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
