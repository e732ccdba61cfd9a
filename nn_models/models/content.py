"""ContentAnalyzer: a text CNN over frozen MiniLM token states that scores virality.

Why a CNN: what makes a synthetic (and a real) post travel is mostly local — a topic
word, a "BREAKING:" prefix, "!!!", a number hook, an emoji. Convolutions of a few
tokens width with a global max pool detect such phrases wherever they sit, and each
filter's strongest window is an explainable "phrase" (see ``filter_activations``), from
which ``content_patterns`` derives the top phrases per filter.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from nn_models.text_encoder import EMBEDDING_DIM

NEG = -1e4  # added to windows that start on padding, so the max never picks them


class FilterActivations(NamedTuple):
    """Per filter: strongest activation, where it starts and how many tokens it spans."""

    values: torch.Tensor  # (batch, n_filters) max-pooled ReLU activation
    positions: torch.Tensor  # (batch, n_filters) token index where the best window starts
    widths: torch.Tensor  # (n_filters,) kernel size of each filter (window length)


class ContentAnalyzer(nn.Module):
    """MiniLM tokens → linear bottleneck → LayerNorm → parallel Conv1d branches → max pool → dense → logit.

    Args:
        embed_dim: width of the token states (384 for all-MiniLM-L6-v2).
        proj_dim: width of a per-token linear bottleneck before the convolutions (0 =
            convolve the 384-wide states directly). On the synthetic demo 16-32 matched
            96 on validation AUC at a fraction of the CPU time.
        filters: output channels of each branch (model card: 64 / 128 / 256).
        kernel_sizes: window width of each branch, in tokens.
        hidden: width of the dense layer after pooling.
        dropout: on the pooled features and the dense layer.
        n_aux: auxiliary regression outputs used during training only (dense targets
            such as the post's channel-relative forward rate: ~10 % positives alone are
            too few to learn which words travel).
    """

    def __init__(
        self,
        embed_dim: int = EMBEDDING_DIM,
        proj_dim: int = 32,
        filters: tuple[int, ...] = (64, 128, 256),
        kernel_sizes: tuple[int, ...] = (3, 4, 5),
        hidden: int = 128,
        dropout: float = 0.3,
        n_aux: int = 0,
    ) -> None:
        super().__init__()
        if len(filters) != len(kernel_sizes):
            raise ValueError("filters and kernel_sizes need one entry per branch")
        self.config = {
            "embed_dim": embed_dim,
            "proj_dim": proj_dim,
            "filters": tuple(filters),
            "kernel_sizes": tuple(kernel_sizes),
            "hidden": hidden,
            "dropout": dropout,
            "n_aux": n_aux,
        }
        width = proj_dim or embed_dim
        self.proj = nn.Linear(embed_dim, proj_dim) if proj_dim else nn.Identity()
        self.norm = nn.LayerNorm(width)
        self.max_kernel = max(kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(width, f, k) for f, k in zip(filters, kernel_sizes, strict=True))
        self.register_buffer(
            "filter_widths",
            torch.cat(
                [torch.full((f,), k, dtype=torch.long) for f, k in zip(filters, kernel_sizes, strict=True)]
            ),
            persistent=False,
        )
        self.dense = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(sum(filters), hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.out = nn.Linear(hidden, 1)
        self.aux_out = nn.Linear(hidden, n_aux) if n_aux else None
        # log(pos_weight) of the class-weighted training loss, subtracted at inference so
        # the logit is a calibrated log-odds again (0 while training).
        self.register_buffer("logit_offset", torch.zeros(()))

    def set_prior_correction(self, log_pos_weight: float) -> None:
        """Remove the odds inflation of a ``pos_weight``-weighted BCE from the output."""
        self.logit_offset.fill_(float(log_pos_weight))

    def _pooled(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per filter: ReLU of the best window's activation and where that window starts.

        Windows starting on padding get ``NEG`` added before the max; ReLU after the max
        equals the max of ReLU maps (monotone) at a fraction of the cost.
        """
        mask = mask.to(torch.float32)
        length = mask.shape[1]
        x = self.norm(self.proj(tokens.to(torch.float32))) * mask.unsqueeze(-1)
        # (batch, width, length + k_max - 1): zeros on the right, so every real token
        # starts a window of every width and the result does not depend on padding length
        x = nn.functional.pad(x.transpose(1, 2), (0, self.max_kernel - 1))
        penalty = (1.0 - mask).unsqueeze(1) * NEG  # 0 real, NEG padding
        values, positions = [], []
        for conv in self.convs:
            k = conv.kernel_size[0]
            out = conv(x[..., : length + k - 1])  # (batch, f, length)
            best, where = (out + penalty).max(dim=-1)
            values.append(torch.relu(best))
            positions.append(where)
        return torch.cat(values, 1), torch.cat(positions, 1)

    def filter_activations(self, tokens: torch.Tensor, mask: torch.Tensor) -> FilterActivations:
        """Max-pooled activation of every filter and the start of its best window.

        Window ``positions[b, f] .. positions[b, f] + widths[f] - 1`` are token indices
        in the MiniLM tokenisation (index 0 is ``[CLS]``) of post ``b``; a value of 0
        means the filter found nothing in the post.
        """
        values, positions = self._pooled(tokens, mask)
        return FilterActivations(values, positions, self.filter_widths)

    def heads(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training outputs: uncorrected viral logit (batch,) and auxiliary (batch, n_aux)."""
        hidden = self.dense(self._pooled(tokens, mask)[0])
        aux = self.aux_out(hidden) if self.aux_out is not None else None
        return self.out(hidden).squeeze(-1), aux

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Viral logit (batch,) from token states ``(batch, L, 384)`` and mask ``(batch, L)``."""
        return self.heads(tokens, mask)[0] - self.logit_offset
