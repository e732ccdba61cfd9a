"""Posting-schedule MLP: expected engagement of a post by channel, weekday, hour and media.

Why a neural model and not a table of slot means: a channel posts mostly at its
habitual hours, so most of its 7 × 24 slots have zero to two posts. Encoding hour
and weekday as low-order sine/cosine harmonics makes the prediction a smooth
function of time (neighbouring hours share evidence), and the channel embedding
lets channels with similar audience rhythms share evidence, so the model ranks
slots it has never seen a post in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from warehouse.schema import MEDIA_TYPES


def harmonics(value: torch.Tensor, period: float, order: int) -> torch.Tensor:
    """[sin(2πk·v/p), cos(2πk·v/p)] for k = 1..order → (n, 2·order)."""
    k = torch.arange(1, order + 1, dtype=torch.float32, device=value.device)
    angle = 2 * math.pi * value.to(torch.float32).unsqueeze(-1) * k / period
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class ScheduleOptimizer(nn.Module):
    """MLP over [channel embedding, weekday harmonics, hour harmonics, media one-hot] → engagement.

    Inputs are integer tensors: ``channel`` (index into ``channel_ids``; use
    ``channel_index``), ``weekday`` (0 = Monday), ``hour`` (UTC) and ``media``
    (index into ``media_types``). The output is the expected log 48 h reach of a
    post relative to its channel's typical post (0 = typical, +0.1 ≈ 10 % more).
    ``media_mix`` (per channel) weights the media types when a whole slot is scored.
    """

    def __init__(
        self,
        channel_ids: Sequence[int],
        embedding_dim: int = 8,
        hidden: Sequence[int] = (128, 64),
        hour_order: int = 3,
        weekday_order: int = 2,
        dropout: float = 0.1,
        media_types: Sequence[str] = MEDIA_TYPES,
    ) -> None:
        super().__init__()
        self.channel_ids = [int(c) for c in channel_ids]
        self.media_types = list(media_types)
        self.hour_order = hour_order
        self.weekday_order = weekday_order
        self.embedding = nn.Embedding(len(self.channel_ids), embedding_dim)
        n_in = embedding_dim + 2 * hour_order + 2 * weekday_order + len(self.media_types)
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(n_in, width), nn.GELU(), nn.Dropout(dropout)]
            n_in = width
        layers.append(nn.Linear(n_in, 1))
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("media_eye", torch.eye(len(self.media_types)))
        uniform = torch.full((len(self.channel_ids), len(self.media_types)), 1 / len(self.media_types))
        self.register_buffer("media_mix", uniform)

    @property
    def channel_index(self) -> dict[int, int]:
        return {c: i for i, c in enumerate(self.channel_ids)}

    def set_media_mix(self, mix: torch.Tensor) -> None:
        """Per-channel share of each media type (rows sum to 1), from training posts."""
        self.media_mix.copy_(torch.as_tensor(mix, dtype=torch.float32))

    def forward(
        self,
        channel: torch.Tensor,
        weekday: torch.Tensor,
        hour: torch.Tensor,
        media: torch.Tensor,
    ) -> torch.Tensor:
        """Expected relative log reach, shape (n,)."""
        x = torch.cat(
            [
                self.embedding(channel.long()),
                harmonics(weekday, 7.0, self.weekday_order),
                harmonics(hour.to(torch.float32) + 0.5, 24.0, self.hour_order),  # mid-hour
                self.media_eye[media.long()],
            ],
            dim=-1,
        )
        return self.mlp(x).squeeze(-1)

    @torch.no_grad()
    def slot_grid(self, channel: int) -> torch.Tensor:
        """7 × 24 expected engagement for a channel index, media weighted by its usual mix."""
        device = self.media_eye.device
        weekday, hour = torch.meshgrid(
            torch.arange(7, device=device), torch.arange(24, device=device), indexing="ij"
        )
        n_media = len(self.media_types)
        w = weekday.reshape(-1, 1).expand(-1, n_media).reshape(-1)
        h = hour.reshape(-1, 1).expand(-1, n_media).reshape(-1)
        m = torch.arange(n_media, device=device).repeat(168)
        c = torch.full_like(m, channel)
        pred = self(channel=c, weekday=w, hour=h, media=m).reshape(168, n_media)
        return (pred * self.media_mix[channel]).sum(dim=1).reshape(7, 24)

    def slot_grids(self) -> torch.Tensor:
        """(n_channels, 7, 24) grids for every channel the model knows (in eval mode)."""
        was_training = self.training
        self.eval()
        try:
            return torch.stack([self.slot_grid(i) for i in range(len(self.channel_ids))])
        finally:
            self.train(was_training)
