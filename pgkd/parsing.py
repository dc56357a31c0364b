"""Turning a teacher's reply into validated training samples, and the split firewall that keeps
validation and test texts out of prompts and out of the generated data."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
TEXT_KEYS = ("text", "sample", "sentence", "content", "input", "headline", "review")
LABEL_KEYS = ("label", "class_names", "class_name", "category", "class", "topic", "class_label")
LIST_KEYS = ("samples", "data", "examples", "items", "training_samples", "results")
EXTRA_KEYS = ("target_class", "addresses", "weak_class", "hard_negative", "rationale")
WORD = re.compile(r"[^\W_]+")  # Unicode letters and digits, any script
# Scripts written without spaces between words: each character is a token there, so that n-gram
# overlap works as it does for spaced scripts (Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan).
UNSPACED = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff"
                      r"\u1000-\u109f\u1780-\u17ff\u0f00-\u0fff\U00020000-\U0002fa1f])")


def normalize(text: str) -> str:
    """The key for duplicate checks: NFKC, case-folded, Unicode word tokens (letters, digits
    and combining marks of any script) joined by single spaces; characters of unspaced scripts
    are tokens of their own."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    if folded.isascii():
        return " ".join(WORD.findall(folded))
    tokens, word = [], []
    for char in UNSPACED.sub(r" \1 ", folded):
        if unicodedata.category(char)[0] in "LNM":
            word.append(char)
        elif word:
            tokens.append("".join(word))
            word = []
    if word:
        tokens.append("".join(word))
    return " ".join(tokens)


def _decode_all(text: str) -> list[Any]:
    """Every top-level JSON value that can be decoded from ``text`` (prose around it allowed)."""
    decoder, values, index = json.JSONDecoder(), [], 0
    while index < len(text):
        starts = [i for i in (text.find("[", index), text.find("{", index)) if i >= 0]
        if not starts:
            break
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        except RecursionError:  # absurdly deep nesting: nothing sensible inside
            break
        values.append(value)
        index = end
    return values


def extract_json(text: str) -> Any | None:
    """The JSON payload of a reply: the whole text, a fenced block, or the values found in prose
    (a list wins; several loose objects are taken as a list)."""
    candidates = [text.strip()] + [m.strip() for m in FENCE.findall(text)]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError, RecursionError):
            pass
    values = _decode_all(text)
    lists = [v for v in values if isinstance(v, list)]
    if lists:
        return max(lists, key=len)
    objects = [v for v in values if isinstance(v, dict)]
    if len(objects) == 1:
        return objects[0]
    return objects or None


def as_items(payload: Any) -> list[Any] | None:
    """The list of sample objects inside a payload ({"samples": [...]}, a bare object, ...)."""
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        for key in LIST_KEYS:
            if isinstance(payload.get(key), list):
                return payload[key]
        return [payload]
    return None


class LabelMap:
    """Maps a reply's label onto the taxonomy: exact, then case/whitespace-normalised, then (for
    the paper's ``class_label`` index) a 0-based integer index."""

    def __init__(self, taxonomy: Sequence[str]):
        self.taxonomy = list(taxonomy)
        self.exact = set(self.taxonomy)
        self.loose = {" ".join(label.casefold().split()): label for label in self.taxonomy}

    def __call__(self, value: Any) -> str | None:
        if isinstance(value, str):
            if value in self.exact:
                return value
            return self.loose.get(" ".join(value.casefold().split()))
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(self.taxonomy):
            return self.taxonomy[value]
        return None

    def from_item(self, item: dict) -> tuple[str | None, bool]:
        """(label, had_a_label_field). Named labels win over indices."""
        present = [item[k] for k in LABEL_KEYS if k in item and item[k] not in (None, "")]
        for value in sorted(present, key=lambda v: not isinstance(v, str)):
            if (label := self(value)) is not None:
                return label, True
        return None, bool(present)


class SplitFirewall:
    """Exact and near duplicates of indexed texts: token 3-gram Jaccard >= threshold, or a
    candidate whose 3-grams lie (>= threshold) inside one indexed text — e.g. a prompt example
    copied back cut short. ``reason(text)`` is None for a text that may be used. Guards the
    validation/test splits, and (``prefix="history"``) the training history."""

    def __init__(self, texts: Iterable[str], threshold: float = 0.8, prefix: str = "split"):
        self.threshold, self.prefix = threshold, prefix
        self.exact: set[str] = set()
        self.shingles: list[frozenset] = []
        self.index: dict[Any, list[int]] = defaultdict(list)
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        key = normalize(text)
        if key in self.exact:
            return
        self.exact.add(key)
        grams = self._shingles(key)
        self.shingles.append(grams)
        for gram in grams:
            self.index[gram].append(len(self.shingles) - 1)

    @staticmethod
    def _shingles(key: str) -> frozenset:
        tokens = key.split()
        if len(tokens) < 3:
            return frozenset([tuple(tokens)])
        return frozenset(zip(tokens, tokens[1:], tokens[2:]))

    def reason(self, text: str) -> str | None:
        key = normalize(text)
        if key in self.exact:
            return f"{self.prefix}_exact_duplicate"
        grams = self._shingles(key)
        overlap = Counter(doc for gram in grams for doc in self.index.get(gram, ()))
        for doc, shared in overlap.most_common(5):
            jaccard = shared / (len(grams) + len(self.shingles[doc]) - shared)
            if max(jaccard, shared / len(grams)) >= self.threshold:
                return f"{self.prefix}_near_duplicate"
        return None


@dataclass
class ParseResult:
    samples: list[dict] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    parsed: bool = True


def parse_samples(reply: str, taxonomy: Sequence[str] | LabelMap, *, seen: set[str] | None = None,
                  firewall: SplitFirewall | None = None, history: SplitFirewall | None = None,
                  max_chars: int = 2000) -> ParseResult:
    """Validated ``{"text", "label"}`` samples of a reply plus a count of rejections by reason.

    ``seen`` holds normalised texts already in the history (and is updated with the accepted
    ones, so duplicates inside a reply are caught too); ``history`` (optional) also rejects near
    copies of history texts and is updated likewise.
    """
    labels = taxonomy if isinstance(taxonomy, LabelMap) else LabelMap(taxonomy)
    seen = seen if seen is not None else set()
    items = as_items(extract_json(reply))
    result = ParseResult()
    if items is None:
        result.parsed = False
        result.rejected["not_json"] += 1
        return result
    for item in items:
        if not isinstance(item, dict):
            result.rejected["not_an_object"] += 1
            continue
        text = next((item[k] for k in TEXT_KEYS if isinstance(item.get(k), str)), None)
        if text is None:
            result.rejected["missing_text"] += 1
            continue
        text = text.strip()
        label, had_label = labels.from_item(item)
        reason = None
        if not text:
            reason = "empty_text"
        elif len(text) > max_chars:
            reason = "too_long"
        elif label is None:
            reason = "unknown_label" if had_label else "missing_label"
        elif normalize(text) in seen:
            reason = "duplicate"
        if reason is None and firewall is not None:
            reason = firewall.reason(text.rstrip("…"))
        if reason is None and history is not None:
            reason = history.reason(text.rstrip("…"))
        if reason:
            result.rejected[reason] += 1
            continue
        seen.add(normalize(text))
        if history is not None:
            history.add(text)
        sample = {"text": text, "label": label}
        sample.update({k: str(item[k]) for k in EXTRA_KEYS if k in item})
        result.samples.append(sample)
    return result
