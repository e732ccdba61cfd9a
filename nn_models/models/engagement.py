"""``EngagementPredictor``: how a post will do at 48 h, from everything observed of it.

An LSTM reads the post's trajectory on the grid of ``features.post_trajectories``
(every 15 min to 3 h, hourly to 24 h, then 30/36/42 h: log counters, also relative to
the channel's usual 48 h views and to its subscribers, and at every step the channel's
usual log growth from that age to 48 h and the channel-growth rule's margin, i.e. the
latest views extrapolated with that growth against the channel's prior median) and a
small dense block adds the static context known at publication (publish hour/weekday,
media, text length, channel size and baseline, and how the channel's earlier posts
grew from 1/3/6/12 h to 48 h, overall and at the same time of day). One model serves
every post age: the sequence is padded to the full grid and ``length`` says how many
grid points have been observed; the LSTM is causal, so the hidden state at
``length - 1`` has seen exactly the observed prefix.

Three heads share the trunk:

* ``score``: sigmoid engagement score, the post's predicted percentile of 48 h views
  within its channel (> 0.5 = above the channel's median). Its logit is the trunk's
  output plus ``rule_weight`` x the rule's margin (raw, unnormalised), so an untrained
  head already reads the latest snapshot the way the channel-growth rule does and
  training learns the correction;
* log 48 h views and log 48 h interactions as quantiles p10/p50/p90 in ``log1p``
  space. Counters are cumulative, so p10 >= observed and p10 <= p50 <= p90 by
  construction: views p50 = observed + a soft ReLU of (the channel's usual growth
  from this age + a learned correction), so it starts at the rule's extrapolation;
  p10 lies a learned share of the way from observed to p50, p90 = p50 + softplus.
  Interactions: observed plus a cumulative softplus.

Normalisation statistics are buffers, so a model loaded from the registry scores raw
feature arrays (built by ``nn_models.tasks.engagement``) without the task object.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Per grid step, in this order (built by ``nn_models.tasks.engagement.sequence_features``).
SEQUENCE_FEATURES: tuple[str, ...] = (
    "log_views",  # log1p(views)
    "log_forwards",  # log1p(forwards)
    "log_replies",  # log1p(replies)
    "log_reactions",  # log1p(reactions)
    "log_interactions",  # log1p(forwards + replies + reactions)
    "views_vs_channel",  # log1p(views) - log1p(channel prior median 48 h views)
    "views_vs_subscribers",  # log1p(views) - log1p(subscribers at publish)
    "age_hours",  # grid age in hours / 12
    "channel_growth_to_48h",  # the channel's usual log1p growth from this age to 48 h
    "rule_vs_channel",  # log_views + channel_growth_to_48h - log1p(channel median)
)
VIEWS = SEQUENCE_FEATURES.index("log_views")
GROWTH = SEQUENCE_FEATURES.index("channel_growth_to_48h")
RULE = SEQUENCE_FEATURES.index("rule_vs_channel")
RULE_WEIGHT_INIT = 3.0  # logit per unit of log margin at initialisation
INTERACTIONS = SEQUENCE_FEATURES.index("log_interactions")

# Per post, known at publication (built by ``nn_models.tasks.engagement.static_features``).
STATIC_FEATURES: tuple[str, ...] = (
    "hour_sin",
    "hour_cos",
    "weekday_sin",
    "weekday_cos",
    "media_none",
    "media_photo",
    "media_video",
    "media_document",
    "media_poll",
    "media_other",
    "log_text_length",
    "log_subscribers",
    "has_subscribers",
    "log_channel_median_views",
    "has_channel_median",
    "log_channel_prior_posts",
    # how the channel's earlier posts grew from 1/3/6/12 h to 48 h: all of them, and those
    # published in the same 3-hour band of the day (audience rhythm)
    "channel_growth_1h",
    "channel_growth_3h",
    "channel_growth_6h",
    "channel_growth_12h",
    "band_growth_1h",
    "band_growth_3h",
    "band_growth_6h",
    "band_growth_12h",
    "has_channel_growth",
)

QUANTILES: tuple[float, float, float] = (0.1, 0.5, 0.9)


class EngagementPredictor(nn.Module):
    """LSTM over the observed trajectory + static context → score and 48 h quantiles.

    Inputs (keyword tensors, named like the arrays of the task's ``PreparedData``):
    ``sequence`` (N, T, len(SEQUENCE_FEATURES)) float32 padded to the full grid,
    ``length`` (N,) int64 observed grid points (1..T), ``static`` (N, len(STATIC_FEATURES)).
    Returns ``(score (N,), log_views_q (N, 3), log_interactions_q (N, 3))``.
    """

    def __init__(
        self,
        n_sequence_features: int = len(SEQUENCE_FEATURES),
        n_static_features: int = len(STATIC_FEATURES),
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.2,
        dense: int = 64,
        dense2: int = 32,
    ) -> None:
        super().__init__()
        self.register_buffer("sequence_mean", torch.zeros(n_sequence_features))
        self.register_buffer("sequence_std", torch.ones(n_sequence_features))
        self.register_buffer("static_mean", torch.zeros(n_static_features))
        self.register_buffer("static_std", torch.ones(n_static_features))
        self.lstm = nn.LSTM(
            n_sequence_features,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.trunk = nn.Sequential(
            nn.Linear(hidden + n_static_features, dense),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dense, dense2),
            nn.ReLU(),
        )
        self.score_head = nn.Linear(dense2, 1)
        self.rule_weight = nn.Parameter(torch.tensor(RULE_WEIGHT_INIT))
        self.views_head = nn.Linear(dense2, len(QUANTILES))
        self.interactions_head = nn.Linear(dense2, len(QUANTILES))

    @torch.no_grad()
    def set_normalisation(self, sequence: torch.Tensor, length: torch.Tensor, static: torch.Tensor) -> None:
        """Store mean/std of the observed steps and of the static features (training data)."""
        steps = torch.arange(sequence.shape[1])[None, :] < length[:, None]
        observed = sequence[steps]
        self.sequence_mean.copy_(observed.mean(dim=0))
        self.sequence_std.copy_(observed.std(dim=0).clamp_min(1e-3))
        self.static_mean.copy_(static.mean(dim=0))
        self.static_std.copy_(static.std(dim=0).clamp_min(1e-3))

    @staticmethod
    def _at_last(values: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """``values[i, length[i] - 1]`` for (N, T, D) values."""
        index = (length.long() - 1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, values.shape[-1])
        return values.gather(1, index).squeeze(1)

    @staticmethod
    def _cumulative_quantiles(reference: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """p10 = observed + softplus, p50 = p10 + softplus, p90 = p50 + softplus."""
        return reference.unsqueeze(-1) + torch.cumsum(F.softplus(raw), dim=-1)

    @staticmethod
    def _views_quantiles(observed: torch.Tensor, growth: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """p50 = observed + softplus_5(growth + raw50); p10 = observed + sigmoid(raw10)
        x (p50 - observed); p90 = p50 + softplus(raw90)."""
        gap = F.softplus(growth + raw[..., 1], beta=5.0)
        p50 = observed + gap
        p10 = observed + torch.sigmoid(raw[..., 0] + 1.0) * gap
        p90 = p50 + F.softplus(raw[..., 2])
        return torch.stack([p10, p50, p90], dim=-1)

    def forward_steps(
        self, sequence: torch.Tensor, static: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predictions after every grid step at once: (N, T), (N, T, 3), (N, T, 3).

        The LSTM is causal, so step ``t`` is exactly what ``forward`` returns for
        ``length = t + 1``; training uses this to learn every post age in one pass.
        """
        out, _ = self.lstm((sequence - self.sequence_mean) / self.sequence_std)
        context = (static - self.static_mean) / self.static_std
        context = context.unsqueeze(1).expand(-1, sequence.shape[1], -1)
        z = self.trunk(torch.cat([out, context], dim=-1))
        logit = self.score_head(z).squeeze(-1) + self.rule_weight * sequence[..., RULE]
        score = torch.sigmoid(logit)
        log_views = self._views_quantiles(sequence[..., VIEWS], sequence[..., GROWTH], self.views_head(z))
        log_interactions = self._cumulative_quantiles(sequence[..., INTERACTIONS], self.interactions_head(z))
        return score, log_views, log_interactions

    def forward(
        self, sequence: torch.Tensor, length: torch.Tensor, static: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        steps = torch.arange(sequence.shape[1], device=sequence.device)[None, :]
        observed = (steps < length.view(-1, 1)).unsqueeze(-1)
        sequence = torch.where(observed, sequence, torch.zeros_like(sequence))
        score, log_views, log_interactions = self.forward_steps(sequence, static)
        index = (length.long() - 1).clamp_min(0).view(-1, 1)
        return (
            score.gather(1, index).squeeze(1),
            self._at_last(log_views, length),
            self._at_last(log_interactions, length),
        )
