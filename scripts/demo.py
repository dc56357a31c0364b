"""A first look at PGKD working: replay committed Claude-class teacher transcripts at $0.

    python scripts/demo.py            # (make demo) AG News and HuffPost, seed 0, embedded data

Each demo run re-creates a committed run of the default config (frozen MiniLM student, 1,000
labels, 10 KD steps, 32 samples a step) whose teacher was a Claude-class model answering through
`teacher=file`: `teacher=replay` answers every request from `results/transcripts/`, so no LLM is
downloaded or called. It prints model_0 vs the kept model on the full test split, and the numbers
the committed run recorded.
"""

from pgkd.cli import prepare_environment

prepare_environment(__file__)

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from hydra import compose, initialize_config_dir  # noqa: E402

import pgkd.config  # noqa: E402,F401  (resolvers)
from pgkd.experiment import run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "claude-class-via-teacher-file"
DEMOS = [("ag_news", 0), ("huffpost", 0)]


def committed(dataset: str, seed: int) -> dict | None:
    pattern = f"table2__{dataset}__minilm_l6_frozen__pgkd-file-{TEACHER}-full__n1000__seed{seed}-*.json"
    found = sorted((ROOT / "results" / "runs").glob(pattern))
    return json.loads(found[0].read_text()) if found else None


def main() -> int:
    lines = []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for dataset, seed in DEMOS:
            reference = committed(dataset, seed)
            if reference is None:
                print(f"{dataset}: no committed Claude-class run to replay", file=sys.stderr)
                return 1
            cfg = compose("config", overrides=[
                "task_name=demo", f"dataset={dataset}", f"seed={seed}", "teacher=replay",
                "teacher@teacher.original=file", f"teacher.original.backend.model={TEACHER}",
                "trainer.enable_progress_bar=false", "logger=none"])
            result = run(cfg)
            m0, best = result["model_0"]["test"], result["test"]
            same = [s["val_loss"] for s in result["steps"]] == [s["val_loss"] for s in reference["steps"]]
            lines.append(f"{dataset:>9} (seed {seed}, {result['n_classes']} classes, test n={best['n']}): "
                         f"model_0 acc {m0['accuracy']:.3f} / macro-F1 {m0['macro_f1']:.3f} -> kept model "
                         f"(step {result['best_step']}) acc {best['accuracy']:.3f} / macro-F1 {best['macro_f1']:.3f} "
                         f"| teacher calls replayed {result['teacher']['cache_hits']}, cost "
                         f"${result['teacher']['cost_usd']:.2f} | same steps as the committed run: {same}")
    print("\nPGKD with a Claude-class teacher (replayed transcripts):\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
