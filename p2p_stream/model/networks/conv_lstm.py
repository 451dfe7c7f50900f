"""Model: `conv-lstm`, the default — a strided conv front end, a small BiLSTM, pooled, with optional demographics."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# Demographics vector layout, shared with the code that builds it (see `demographics.py`).
META_FEATURES = 4  # (age_z, male, female, age_known)


@dataclass
class ConvLSTMConfig:
    channels: list[int] = field(default_factory=lambda: [16, 32, 48, 64])  # conv widths; each halves the rate
    kernel: int = 7  # conv kernel, samples; 7 at 125 Hz spans 56 ms, about an upstroke
    hidden: int = 32  # LSTM width per direction; 64 was no better on PPG-BP and twice the cost
    dropout: float = 0.2  # before the head
    use_demographics: bool = True  # concatenate age/sex features before the head
    outputs: int = 2  # SBP and DBP, standardised


class ConvLSTM(nn.Module):
    """PPG window (any length ≥ ~0.5 s) → (SBP, DBP) in standardised units.

    The conv stack brings 125 Hz down 16× (≈ 7.8 Hz), so the LSTM runs 16× fewer steps than
    the seed model on a 64-wide state: that is where the CPU speed comes from. Mean and max
    pooling over time make the output independent of the window length.
    """

    def __init__(self, config: ConvLSTMConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in config.channels:
            layers += [
                nn.Conv1d(c_in, c_out, config.kernel, stride=2, padding=config.kernel // 2),
                nn.BatchNorm1d(c_out),
                nn.GELU(),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.lstm = nn.LSTM(c_in, config.hidden, batch_first=True, bidirectional=True)
        pooled = 4 * config.hidden  # mean and max of both directions
        meta_width = 16 if config.use_demographics else 0
        self.meta = nn.Sequential(nn.Linear(META_FEATURES, meta_width), nn.GELU()) if meta_width else None
        self.head = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(pooled + meta_width, 64),
            nn.GELU(),
            nn.Linear(64, config.outputs),
        )

    @property
    def uses_demographics(self) -> bool:
        return self.config.use_demographics

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The PPG's pooled features (B, 4H): what the head reads, and where out-of-distribution is measured."""
        h = self.features(x.unsqueeze(1))  # (B, C, T/16)
        h, _ = self.lstm(h.transpose(1, 2))  # (B, T/16, 2H)
        return torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=1)  # (B, 4H)

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T) normalised PPG; meta: (B, META_FEATURES) or None (treated as unknown).
        return self.head_from(self.embed(x), meta)

    def head_from(self, pooled: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features (B, 4H) [+ meta] → (B, outputs)."""
        if self.meta is not None:
            if meta is None:
                meta = pooled.new_zeros(pooled.shape[0], META_FEATURES)
            pooled = torch.cat([pooled, self.meta(meta)], dim=1)
        return self.head(pooled)  # (B, outputs)
