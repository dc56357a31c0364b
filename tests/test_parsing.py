"""Parsing teacher replies: JSON extraction, label mapping, rejections by reason, the split
firewall, and a fuzz corpus of bad replies that must never crash the parser."""

from __future__ import annotations

import json
import random

import pytest

from pgkd.parsing import LabelMap, SplitFirewall, extract_json, normalize, parse_samples

TAXONOMY = ["World", "Sports", "Business", "Sci/Tech"]
GOOD = [{"text": "Stocks rally on earnings", "label": "Business"}, {"text": "Final goes to extra time", "label": "Sports"}]


@pytest.mark.parametrize("reply", [
    json.dumps(GOOD),
    "```json\n" + json.dumps(GOOD) + "\n```",
    "Sure, here you go:\n" + json.dumps(GOOD) + "\nLet me know if you need more.",
    json.dumps({"samples": GOOD}),
    "\n".join(json.dumps(item) for item in GOOD),  # JSON lines
    json.dumps([{"text": g["text"], "class_names": g["label"], "class_label": 9} for g in GOOD]),  # paper variant
])
def test_reply_shapes_are_extracted(reply):
    result = parse_samples(reply, TAXONOMY)
    assert result.parsed and not result.rejected
    assert [(s["text"], s["label"]) for s in result.samples] == [(g["text"], g["label"]) for g in GOOD]


def test_labels_map_exactly_then_loosely_then_by_index():
    labels = LabelMap(TAXONOMY)
    assert labels("Sci/Tech") == "Sci/Tech"
    assert labels("  sci/tech ") == "Sci/Tech" and labels("WORLD") == "World"
    assert labels(2) == "Business" and labels(7) is None and labels(True) is None
    assert labels("Technology") is None


def test_every_rejection_is_counted_by_reason():
    firewall = SplitFirewall(["The protected validation headline about the central bank raising rates today"])
    seen = {normalize("already in history")}
    items = [
        {"text": "fine sample", "label": "World"},
        {"text": "unknown", "label": "Cooking"},
        {"text": "no label"},
        {"label": "World"},
        {"text": "   ", "label": "World"},
        {"text": "x" * 150, "label": "World"},
        {"text": "Already in HISTORY!", "label": "World"},
        {"text": "fine sample", "label": "Sports"},
        {"text": "the protected validation headline about the central bank raising rates today", "label": "Business"},
        {"text": "The protected validation headline about the central bank raising rates today, says AP", "label": "Business"},
        "just a string",
    ]
    result = parse_samples(json.dumps(items), TAXONOMY, seen=seen, firewall=firewall, max_chars=100)
    assert [s["text"] for s in result.samples] == ["fine sample"]
    assert dict(result.rejected) == {"unknown_label": 1, "missing_label": 1, "missing_text": 1, "empty_text": 1,
                                     "too_long": 1, "duplicate": 2, "not_an_object": 1,
                                     "split_exact_duplicate": 1, "split_near_duplicate": 1}


def test_firewall_catches_exact_and_near_duplicates_but_not_other_texts():
    firewall = SplitFirewall(["Oil prices hit a record high as supply worries grow in the Gulf of Mexico"], 0.8)
    assert firewall.reason("oil prices hit a record high as supply worries grow in the gulf of mexico!") == "split_exact_duplicate"
    assert firewall.reason("Oil prices hit a record high as supply worries grow in the Gulf of Mexico region") == "split_near_duplicate"
    assert firewall.reason("Oil prices fall as demand slows in Asia") is None


def test_not_json_replies_are_marked_unparsed():
    for reply in ["", "I cannot help with that.", "null", '"a string"', "42"]:
        result = parse_samples(reply, TAXONOMY)
        assert not result.parsed and result.rejected == {"not_json": 1}


def test_fuzz_corpus_never_crashes_and_only_yields_valid_samples():
    rng = random.Random(0)
    base = json.dumps(GOOD * 3)
    corpus = ["[", "]", "{", "[{]", "[[[[[[[[]]]]]]]]", "[" * 5000, '{"samples": 5}', '[{"text": ["a"], "label": "World"}]',
              '[{"text": "a", "label": ["World"]}]', '[{"text": "a", "label": null}]', "```\n```", "\x00\xff",
              '{"text": "a", "label": "World"} {"text": "b", "label": "World"}', json.dumps([None, 1, "x", [], {}])]
    for _ in range(400):
        chars = list(base)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(chars))
            action = rng.random()
            if action < 0.4:
                del chars[position]
            elif action < 0.8:
                chars.insert(position, rng.choice('[]{}",:\\ abcWorld'))
            else:
                chars[position] = rng.choice('"{}[]')
        corpus.append("".join(chars))
    for reply in corpus:
        result = parse_samples(reply, TAXONOMY)
        for sample in result.samples:
            assert sample["label"] in TAXONOMY and sample["text"].strip()
    assert extract_json("prefix [1, 2] middle [3] suffix") == [1, 2]


def test_copies_of_history_cut_short_are_rejected_and_new_texts_kept():
    from pgkd.parsing import SplitFirewall

    original = ("Oil prices hit a record high as supply worries grow in the Gulf of Mexico, traders said on "
                "Monday, while refiners reported further outages after the storm")
    history = SplitFirewall([original], 0.8, prefix="history")
    reply = json.dumps([{"text": original[:90] + "…", "label": "Business"},
                        {"text": "Central bank holds rates steady amid slowing growth", "label": "Business"}])
    result = parse_samples(reply, TAXONOMY, history=history)
    assert [s["text"] for s in result.samples] == ["Central bank holds rates steady amid slowing growth"]
    assert dict(result.rejected) == {"history_near_duplicate": 1}
    firewall = SplitFirewall([original])
    assert firewall.reason(original[:90]) == "split_near_duplicate"  # a cut copy of a test text


def test_normalisation_is_unicode_aware():
    """Non-English datasets: normalising must not erase the text (it used to return "" for
    Cyrillic, so every sample was a 'duplicate' of every other)."""
    assert normalize("Привет, мир") == "привет мир"
    assert normalize("ＡＢＣ Straße") == "abc strasse"  # NFKC + casefold
    assert normalize("مرحبا بالعالم") == "مرحبا بالعالم"
    assert normalize("今天天气很好") == "今 天 天 气 很 好"  # unspaced script: characters as tokens
    history = ["Центральный банк повысил ключевую ставку", "Футбольный клуб выиграл кубок страны"]
    seen = {normalize(t) for t in history}
    reply = json.dumps([{"text": "Новый смартфон получил складной экран", "label": "tech"},
                        {"text": "Центральный банк повысил ключевую ставку", "label": "business"}])
    result = parse_samples(reply, ["business", "tech"], seen=seen,
                           firewall=SplitFirewall(["Учёные открыли новую планету у далёкой звезды"]))
    assert [s["text"] for s in result.samples] == ["Новый смартфон получил складной экран"]
    assert result.rejected == {"duplicate": 1}


def test_firewall_catches_near_copies_in_unspaced_scripts():
    firewall = SplitFirewall(["今天北京的天气非常好，适合出去散步，公园里有很多人在放风筝和跑步。",
                              "Учёные открыли новую планету у далёкой звезды"])
    assert firewall.reason("今天北京的天气非常好，适合出门散步，公园里有很多人在放风筝和跑步。") == "split_near_duplicate"
    assert firewall.reason("учёные открыли новую планету у далёкой звезды!") == "split_exact_duplicate"
    assert firewall.reason("股票市场今天大幅下跌") is None
    assert firewall.reason("Новый смартфон получил складной экран") is None
