"""The PGKD prompt (paper Appendix A.1) and the zero-shot prompt (A.2), rendered from the
templates of the ``prompt`` config group."""

from __future__ import annotations

import json
import re
from typing import Mapping, Sequence

import pandas as pd

from pgkd.teacher.base import Message

PLACEHOLDER = re.compile(r"\{(\w+)\}")


def render(template: str, **values) -> str:
    """Fill ``{name}`` placeholders that have a value; leave every other brace alone."""
    return PLACEHOLDER.sub(lambda m: str(values[m[1]]) if m[1] in values else m[0], template)


def _cut(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars].rstrip() + "…"


def format_examples(frame: pd.DataFrame, max_chars: int = 400, predicted: bool = False) -> str:
    """One JSON object a line: text, gold label and (for mined sets) the student's prediction."""
    lines = []
    for row in frame.itertuples(index=False):
        item = {"text": _cut(row.text, max_chars), "label": row.label}
        if predicted:
            item["predicted"] = row.predicted
        lines.append(json.dumps(item, ensure_ascii=False))
    return "\n".join(lines)


def validation_report(metrics: Mapping, max_classes: int | None = None) -> str:
    """Aggregate validation numbers only (never a validation text): overall accuracy, then
    ``label | precision | recall | f1 | support`` per class (recall is the per-class accuracy).
    Classes without validation examples get no row (``0.00 | 0.00 | 0.00 | 0`` reads as a
    failure): one line names them. ``max_classes`` keeps the weakest scored classes by F1 (for
    small-context teachers and 300+ classes)."""
    scored = [(label, m) for label, m in metrics["per_class"].items() if m["support"] > 0]
    unscored = [label for label, m in metrics["per_class"].items() if m["support"] == 0]
    header = [f"accuracy: {metrics['accuracy']:.3f}", f"macro avg f1: {metrics['macro_f1']:.3f}"]
    if max_classes and len(scored) > max_classes:
        header.append(f"(the {max_classes} classes with the lowest F1 of {len(scored)} scored)")
        scored = sorted(scored, key=lambda item: item[1]["f1"])[:max_classes]
    rows = header + ["label | precision | recall | f1 | support"]
    rows += [f"{label} | {m['precision']:.2f} | {m['recall']:.2f} | {m['f1']:.2f} | {m['support']}"
             for label, m in scored]
    if unscored:
        rows.append(f"not scored (no validation examples): {', '.join(unscored)}")
    return "\n".join(rows)


def confusion_lines(confusions: Sequence[Sequence]) -> str:
    """``true label -> predicted label: count`` per line (counts only, never a text)."""
    return "\n".join(f"{gold} -> {pred}: {count}" for gold, pred, count in confusions)


def generation_schema(taxonomy: Sequence[str], n_samples: int) -> dict:
    """JSON schema of a reply: exactly ``n_samples`` objects ``{text, label ∈ taxonomy}``."""
    return {
        "type": "array", "minItems": n_samples, "maxItems": n_samples,
        "items": {
            "type": "object",
            # no maxLength: llama.cpp expands it into a grammar with one rule per character;
            # over-long texts are rejected by the parser instead
            "properties": {"text": {"type": "string", "minLength": 1},
                           "label": {"type": "string", "enum": list(taxonomy)}},
            "required": ["text", "label"],
        },
    }


def build_pgkd_messages(prompt_cfg: Mapping, *, taxonomy: Sequence[str], fewshot: pd.DataFrame,
                        n_samples: int, report: Mapping | None, correct: pd.DataFrame,
                        misclassified: pd.DataFrame, hard_negatives: pd.DataFrame | None,
                        max_chars: int = 400, report_max_classes: int | None = None,
                        confusions: Sequence[Sequence] | None = None) -> tuple[list[Message], list[str]]:
    """Messages of one PGKD request and the names of the sections they contain.

    ``report=None`` drops the validation report (ablation "w/o Validation");
    ``hard_negatives=None`` drops that section (ablation "w/o Hard Negatives"); an empty mined
    set drops its section too (there is nothing to show). ``confusions`` (gold, predicted, count)
    adds the most frequent validation confusions (``pgkd.report_confusions``).
    """
    values = {
        "taxonomy": "\n".join(taxonomy),
        "fewshot": format_examples(fewshot, max_chars),
        "n_samples": n_samples,
        "validation_report": validation_report(report, report_max_classes) if report is not None else None,
        "confusions": confusion_lines(confusions) if confusions else None,
        "correct": format_examples(correct, max_chars, predicted=True) if len(correct) else None,
        "misclassified": format_examples(misclassified, max_chars, predicted=True) if len(misclassified) else None,
        "hard_negatives": (format_examples(hard_negatives, max_chars, predicted=True)
                           if hard_negatives is not None and len(hard_negatives) else None),
    }
    sections = prompt_cfg["sections"]
    used = [name for name in prompt_cfg["order"] if name in ("intro", "request") or values.get(name)]
    user = "\n\n".join(render(sections[name], **{k: v for k, v in values.items() if v is not None})
                       for name in used)
    messages = [Message("system", prompt_cfg["system"])] if prompt_cfg.get("system") else []
    return messages + [Message("user", user)], used


def build_zero_shot_messages(prompt_cfg: Mapping, taxonomy: Sequence[str], text: str) -> list[Message]:
    """The Appendix A.2 prompt for one text."""
    cfg = prompt_cfg["zero_shot"]
    user = render(cfg["user"], taxonomy="\n".join(taxonomy), text=text)
    return ([Message("system", cfg["system"])] if cfg.get("system") else []) + [Message("user", user)]
