"""Model: `seed-lstm`, the research notebook's SimplerImprovedLSTM, kept exactly as it was."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SeedLSTMConfig:
    hidden: int = 512  # LSTM width of the notebook
    layers: int = 3  # stacked LSTM layers, unidirectional
    dropout: float = 0.2  # between LSTM layers and in the first MLP layer
    outputs: int = 1  # the notebook predicted SBP only; 2 gives SBP and DBP


class SeedLSTM(nn.Module):
    """LSTM(1→512, 3 layers) → mean over time → MLP 512→256→128→64→outputs.

    With ``outputs=1`` this has 5,429,761 parameters, as the notebook's model did.
    It ignores the window length mask and demographics: that is the original design.
    """

    uses_demographics = False
    # Trained on one window length (the notebook's 10 s): the daemon must cut exactly that length for it.
    fixed_length = True

    def __init__(self, config: SeedLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(
            input_size=1,
            hidden_size=config.hidden,
            num_layers=config.layers,
            dropout=config.dropout,
            batch_first=True,
        )
        self.head = nn.Sequential(
            nn.Linear(config.hidden, 256),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Dropout(0.15),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(64, config.outputs),
        )

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T) normalised PPG; meta is accepted for a common signature and ignored.
        out, _ = self.lstm(x.unsqueeze(-1))  # (B, T, H)
        return self.head(out.mean(dim=1))  # (B, outputs)
