"""The teacher LLM as a zero-shot classifier on a test split (paper Appendix A.2).

    python scripts/zero_shot.py dataset=huffpost teacher=bedrock limit=1000
    python scripts/zero_shot.py -m dataset=ag_news,huffpost teacher=llamacpp limit=200
"""

from pgkd.cli import prepare_environment

prepare_environment(__file__)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import pgkd.config  # noqa: E402,F401


@hydra.main(version_base="1.3", config_path="../conf", config_name="zero_shot")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from pgkd.zero_shot import run  # torch & Lightning: only once a job runs (--help stays fast)

    run(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
