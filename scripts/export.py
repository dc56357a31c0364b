"""Export a run's model (see conf/export.yaml): a Hugging Face folder or ONNX (+ dynamic int8),
each checked against the PyTorch model on real texts (fp32 agreement must be >= 99 %).

    python scripts/export.py run_dir=outputs/runs/... format=onnx int8=true
    python scripts/export.py run_dir=outputs/runs/... format=hf out_dir=exported/ag_news
"""

import sys

from pgkd.cli import prepare_environment

prepare_environment(__file__)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import pgkd.config  # noqa: E402,F401


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from pgkd.data import DataError
    from pgkd.export import ExportError, export, render

    try:
        result = export(cfg.run_dir, cfg.format, cfg.out_dir, cfg.int8, cfg.texts, cfg.texts_file, cfg.text_column,
                        cfg.label_column, cfg.threads, cfg.cache_dir)
    except (ExportError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(render(result))


if __name__ == "__main__":
    main()
