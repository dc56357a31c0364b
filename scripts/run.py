"""Run one PGKD job (or a Hydra multirun sweep with -m).

    python scripts/run.py                                  # PGKD, defaults (conf/config.yaml)
    python scripts/run.py pgkd=off student=minilm_l6       # the student baseline
    python scripts/run.py -m dataset=ag_news,huffpost seed=0,1,2,3,4
"""

from pgkd.cli import prepare_environment

prepare_environment(__file__)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import pgkd.config  # noqa: E402,F401  (registers resolvers)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from pgkd.experiment import run  # torch & Lightning: only once a job runs (--help stays fast)

    run(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
