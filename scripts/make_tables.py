"""Regenerate the paper's tables and Figure 3 from raw per-run results.

    python scripts/make_tables.py                         # results/runs/*.json -> results/*.md, fig3.png
    python scripts/make_tables.py --collect outputs       # first copy finished runs from outputs/
"""

import argparse
from pathlib import Path

from pgkd.results import collect, write_tables

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect", nargs="*", default=[], help="output roots to collect finished runs from")
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "runs")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    if args.collect:
        count = collect(args.collect, args.runs, transcripts_into=args.runs.parent / "transcripts")
        print(f"collected {count} runs into {args.runs} (transcripts in {args.runs.parent / 'transcripts'})")
    for path in write_tables(args.runs, args.out):
        print(f"wrote {path}")
