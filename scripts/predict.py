"""Classify new texts with a trained run's model (see conf/predict.yaml).

    python scripts/predict.py run_dir=outputs/runs/... input=texts.csv output=preds.csv
    python scripts/predict.py run_dir=... input=test.csv label_column=label      # + accuracy
    echo "Stocks rallied on Friday" | python scripts/predict.py run_dir=... input=-
"""

import sys

from pgkd.cli import prepare_environment

prepare_environment(__file__)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import pgkd.config  # noqa: E402,F401


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from pgkd.data import DataError
    from pgkd.predict import predict

    try:
        summary = predict(cfg.run_dir, str(cfg.input), str(cfg.output), cfg.text_column, cfg.label_column,
                          cfg.top_k, cfg.batch_size, cfg.device, cfg.cache_dir, cfg.encoding, cfg.progress)
    except (DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if cfg.output != "-":
        print(f"{summary['rows']} predictions -> {summary['output']}"
              + (f" (accuracy {summary['accuracy']:.4f})" if "accuracy" in summary else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
