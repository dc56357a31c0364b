"""Build the W&B comparison dashboard (a workspace view and a report) for a sweep.

    python scripts/wandb_dashboard.py                                   # print the panels, check local runs
    python scripts/wandb_dashboard.py entity=my-team datasets=[ag_news,huffpost] save=true
"""

import sys

from pgkd.cli import prepare_environment

prepare_environment(__file__)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import pgkd.config  # noqa: E402,F401


@hydra.main(version_base="1.3", config_path="../conf", config_name="dashboard")
def main(cfg: DictConfig) -> None:
    from pgkd.dashboard import build_dashboard, render

    try:
        result = build_dashboard(cfg)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(render(result))


if __name__ == "__main__":
    main()
