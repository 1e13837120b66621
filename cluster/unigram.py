"""The default model's tokenizer in plain Python: the same token ids as sentence-transformers', 1/6 the memory.

The ``tokenizers`` library builds a byte trie of the 250,002 XLM-R pieces with a hash map per node:
~270 MB resident and 0.4-0.5 s per process, most of a cold start's budget. Headlines are short, so a
Python dictionary of pieces and the same Viterbi search cost ~50 MB and ~0.1 s to load, with a per-word
cache for the words that come back.

It implements exactly the pipeline transformers writes for the converted model's tokenizer.json, and
:func:`supports` checks that file for it, so a different pipeline is never tokenized wrongly (the caller
falls back to ``tokenizers``): special tokens split out of the raw text; no normalizer; whitespace
split (Unicode White_Space, as Rust's ``char::is_whitespace``); metaspace with ``▁`` prepended to every
word and splitting before each ``▁``; the unigram model (best path by summed log-probability, ties to
the earlier and shorter piece, unknown characters scored ``min score - 10`` and consecutive unknowns
fused); ``<s> … </s>`` around the text; truncation to the maximum length. tests/test_onnx_embed.py
compares it with ``tokenizers`` and sentence-transformers on real headlines and edge cases.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_SPACE = "\u2581"
# Rust's char::is_whitespace (Unicode White_Space), not Python's str.isspace (which adds U+001C-001F).
_WHITESPACE = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_UNK_PENALTY = 10.0
_PIECES_FILE = "unigram_pieces.txt"
_SCORES_FILE = "unigram_scores.npy"
_META_FILE = "unigram.json"


def supports(tokenizer_json: dict) -> bool:
    """Whether ``tokenizer_json`` (a parsed tokenizer.json) is the pipeline this module implements."""
    model = tokenizer_json.get("model") or {}
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    post = tokenizer_json.get("post_processor") or {}
    single = [next(iter(item.values()))["id"] for item in post.get("single", [])]
    return (
        model.get("type") == "Unigram"
        and not model.get("byte_fallback")
        and model.get("unk_id") is not None
        and tokenizer_json.get("normalizer") is None
        and steps is not None
        and [s.get("type") for s in steps] == ["WhitespaceSplit", "Metaspace"]
        and steps[1].get("replacement") == _SPACE
        and steps[1].get("prepend_scheme") == "always"
        and steps[1].get("split") is True
        and post.get("type") == "TemplateProcessing"
        and single[1:2] == ["A"]
        and len(single) == 3
        and all(t.get("special") and not t.get("normalized") for t in tokenizer_json.get("added_tokens", []))
    )


def export(tokenizer_json: dict, folder: Path) -> None:
    """Write the compact files :class:`UnigramTokenizer` loads (pieces as text, scores as float64)."""
    vocab = tokenizer_json["model"]["vocab"]
    (folder / _PIECES_FILE).write_text("\n".join(piece for piece, _ in vocab), encoding="utf-8")
    np.save(folder / _SCORES_FILE, np.array([score for _, score in vocab], dtype=np.float64))
    post = tokenizer_json["post_processor"]
    single = [next(iter(item.values()))["id"] for item in post["single"]]
    specials = {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", [])}
    meta = {
        "unk_id": tokenizer_json["model"]["unk_id"],
        "bos": specials[single[0]],
        "eos": specials[single[2]],
        "specials": specials,
    }
    (folder / _META_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")


def exported(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (_PIECES_FILE, _SCORES_FILE, _META_FILE))


class UnigramTokenizer:
    """Token ids for texts, as the tokenizer.json passed to :func:`export` gives them."""

    def __init__(self, folder: Path, max_length: int):
        pieces = (folder / _PIECES_FILE).read_text(encoding="utf-8").split("\n")
        self.scores: list[float] = np.load(folder / _SCORES_FILE).tolist()
        self.ids = dict(zip(pieces, range(len(pieces)), strict=True))
        self.longest = max(map(len, pieces))
        meta = json.loads((folder / _META_FILE).read_text(encoding="utf-8"))
        self.unk_id: int = meta["unk_id"]
        self.bos, self.eos = int(meta["bos"]), int(meta["eos"])
        self.specials: dict[str, int] = meta["specials"]
        # Longest first: the library matches special tokens leftmost-longest.
        alternatives = sorted(self.specials, key=len, reverse=True)
        self._special = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None
        self.unk_score = min(self.scores) - _UNK_PENALTY
        self.max_length = max_length
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for segment, special in self._segments(text):
            if special is not None:
                ids.append(special)
                continue
            for word in _WHITESPACE.split(segment):
                if word:
                    ids += self._word(word)
        return [self.bos, *ids[: self.max_length - 2], self.eos]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def _segments(self, text: str):
        if self._special is None:
            yield text, None
            return
        start = 0
        for match in self._special.finditer(text):
            if match.start() > start:
                yield text[start : match.start()], None
            yield "", self.specials[match.group()]
            start = match.end()
        if start < len(text):
            yield text[start:], None

    def _word(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is None:
            marked = word if word.startswith(_SPACE) else _SPACE + word
            cached = []
            for part in marked.split(_SPACE)[1:]:  # split before every ▁, keeping it with what follows
                cached += self._viterbi(_SPACE + part)
            if len(self._cache) > 200_000:  # bounded: a long-running service sees endless new words
                self._cache.clear()
            self._cache[word] = cached
        return cached

    def _viterbi(self, piece: str) -> list[int]:
        n = len(piece)
        best = [0.0] + [float("-inf")] * n
        starts = [-1] * (n + 1)
        chosen = [0] * (n + 1)
        ids, scores, unk = self.ids, self.scores, self.unk_id
        for i in range(n):
            here = best[i]
            single = False
            for end in range(i + 1, min(n, i + self.longest) + 1):
                token = ids.get(piece[i:end])
                if token is None:
                    continue
                if end == i + 1:
                    single = True
                score = here + scores[token]
                if starts[end] < 0 or score > best[end]:
                    best[end], starts[end], chosen[end] = score, i, token
            if not single:
                score = here + self.unk_score
                if starts[i + 1] < 0 or score > best[i + 1]:
                    best[i + 1], starts[i + 1], chosen[i + 1] = score, i, unk
        out: list[int] = []
        end = n
        while end > 0:
            token = chosen[end]
            if token != unk or not out or out[-1] != unk:  # consecutive unknowns fuse into one
                out.append(token)
            end = starts[end]
        out.reverse()
        return out
