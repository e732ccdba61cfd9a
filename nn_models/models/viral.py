"""ViralDetector: a small Transformer over MiniLM tokens plus pre-publication channel context.

Why: whether a post lands in its channel's top decile of forwards depends on what it
says (topic, hooks — read by self-attention over the frozen MiniLM states, which sees
word combinations a bag of n-grams misses) *and* on facts known before publishing —
media type, publish slot and how that slot has worked for the channel, audience size
(``nn_models.text_data.CONTEXT_FEATURES``). The context enters through a small MLP and
is fused with the pooled text vector. Context normalisation (train mean / std) lives in
buffers so a registered model scores raw features on its own.
"""

from __future__ import annotations

import torch
from torch import nn

from nn_models.text_encoder import EMBEDDING_DIM

NEG = -1e4  # attention score added for padding keys


class EncoderLayer(nn.Module):
    """Pre-norm Transformer encoder layer: masked multi-head self-attention + GELU MLP.

    Written out (rather than ``nn.TransformerEncoderLayer``) so that the ONNX export keeps
    the sequence length dynamic — the built-in attention bakes the traced length into a
    reshape — and with no dropout inside (CPU dropout masks over every attention map
    cost a fifth of the step time for no validation gain).
    """

    def __init__(self, d_model: int, n_heads: int, ff_mult: int = 2) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.scale = (d_model // n_heads) ** -0.5
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.attn_out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Linear(ff_mult * d_model, d_model)
        )

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """``x`` (batch, length, d_model); ``key_bias`` (batch, 1, 1, length): 0 or NEG."""
        qkv = self.qkv(self.norm1(x)).unflatten(-1, (3, self.n_heads, -1))
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, L, d_head)
        scores = (q @ k.transpose(-1, -2)) * self.scale + key_bias
        attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).flatten(-2)
        x = x + self.attn_out(attended)
        return x + self.ff(self.norm2(x))


class ViralDetector(nn.Module):
    """[CLS] + projected tokens → TransformerEncoder → pool ⊕ context MLP → viral probability.

    Args:
        context_dim: number of channel-context features (``text_data.CONTEXT_FEATURES``).
        embed_dim: width of the token states (384 for all-MiniLM-L6-v2).
        d_model: Transformer width (tokens are projected 384 → d_model).
        n_heads: attention heads.
        n_layers: encoder layers.
        ff_mult: feed-forward width as a multiple of ``d_model``.
        dropout: on the fused vector and the head's hidden layer.
        max_length: longest token sequence the learned positions cover.
        pooling: ``"cls"`` (a learned [CLS] token) or ``"mean"`` (masked mean of tokens).
        use_context: fuse the channel context (``False``: text only, for ablations).
        n_aux: auxiliary regression outputs used during training only (dense targets
            such as the post's channel-relative forward rate).
    """

    def __init__(
        self,
        context_dim: int,
        embed_dim: int = EMBEDDING_DIM,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 2,
        ff_mult: int = 2,
        dropout: float = 0.1,
        max_length: int = 64,
        pooling: str = "cls",
        use_context: bool = True,
        n_aux: int = 0,
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.config = {
            "context_dim": context_dim,
            "embed_dim": embed_dim,
            "d_model": d_model,
            "n_heads": n_heads,
            "n_layers": n_layers,
            "ff_mult": ff_mult,
            "dropout": dropout,
            "max_length": max_length,
            "pooling": pooling,
            "use_context": use_context,
            "n_aux": n_aux,
        }
        self.pooling = pooling
        self.use_context = use_context
        self.proj = nn.Linear(embed_dim, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.position = nn.Parameter(torch.zeros(1, max_length + 1, d_model))
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.position, std=0.02)
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, ff_mult) for _ in range(n_layers))
        self.out_norm = nn.LayerNorm(d_model)
        self.register_buffer("context_mean", torch.zeros(context_dim))
        self.register_buffer("context_std", torch.ones(context_dim))
        self.context_net = nn.Sequential(nn.Linear(context_dim, d_model), nn.GELU())
        fused = 2 * d_model if use_context else d_model
        self.dense = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(fused, d_model),
            nn.GELU(),
            nn.Dropout(dropout),
        )
        self.out = nn.Linear(d_model, 1)
        self.aux_out = nn.Linear(d_model, n_aux) if n_aux else None
        # log(pos_weight) of the class-weighted training loss, subtracted at inference so
        # the probability is calibrated to the training base rate (0 while training).
        self.register_buffer("logit_offset", torch.zeros(()))

    def set_prior_correction(self, log_pos_weight: float) -> None:
        """Remove the odds inflation of a ``pos_weight``-weighted BCE from the output."""
        self.logit_offset.fill_(float(log_pos_weight))

    def set_context_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the training set's context mean / std (std 0 → 1) on the model."""
        self.context_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        std = torch.as_tensor(std, dtype=torch.float32)
        self.context_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def text_vector(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pooled (batch, d_model) representation of the post text."""
        real = mask.to(torch.float32) > 0
        x = self.norm(self.proj(tokens.to(torch.float32)))
        length = x.shape[1]
        if self.pooling == "cls":
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
            real = torch.cat([torch.ones_like(real[:, :1]), real], dim=1)
            x = x + self.position[:, : length + 1]
        else:
            x = x + self.position[:, 1 : length + 1]
        key_bias = (~real).to(x.dtype)[:, None, None, :] * NEG
        for layer in self.layers:
            x = layer(x, key_bias)
        x = self.out_norm(x)
        if self.pooling == "cls":
            return x[:, 0]
        weights = real.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def heads(
        self, tokens: torch.Tensor, mask: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training outputs: uncorrected viral logit (batch,) and auxiliary (batch, n_aux)."""
        fused = self.text_vector(tokens, mask)
        if self.use_context:
            ctx = (context.to(torch.float32) - self.context_mean) / self.context_std
            fused = torch.cat([fused, self.context_net(ctx)], dim=1)
        hidden = self.dense(fused)
        aux = self.aux_out(hidden) if self.aux_out is not None else None
        return self.out(hidden).squeeze(-1), aux

    def logit(self, tokens: torch.Tensor, mask: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Calibrated viral log-odds (batch,)."""
        return self.heads(tokens, mask, context)[0] - self.logit_offset

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Viral probability (batch,) from token states, their mask and the channel context."""
        return torch.sigmoid(self.logit(tokens, mask, context))
