"""Datasets: local CSV/JSONL/Parquet copies or the Hugging Face hub, the label taxonomy, and the
seeded annotated sample (train/validation) of the PGKD protocol."""

from __future__ import annotations

import codecs
import gzip
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import pandas as pd
from sklearn.model_selection import train_test_split

log = logging.getLogger(__name__)

TEXT, LABEL = "text", "label"
READERS = {".csv": "csv", ".gz": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


class DataError(ValueError):
    """Bad or missing input data; the message names the file, column and value."""


class DatasetUnavailable(DataError):
    """Neither a local copy nor the hub could provide the dataset (e.g. offline)."""


class PoolTooSmall(DatasetUnavailable):
    """The train pool has fewer rows than ``n_annotated`` (a sweep records the job as skipped)."""


@dataclass
class TextDataset:
    """The splits of one run: annotated train/validation sample, full test split, and the
    unannotated remainder of the train pool (never shown to the teacher; fakes draw from it)."""

    name: str
    taxonomy: list[str]
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    pool: pd.DataFrame = field(repr=False)
    source: str = ""

    @property
    def label_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.taxonomy)}

    def ids(self, labels: Sequence[str]) -> list[int]:
        mapping = self.label_to_id
        unknown = sorted({label for label in labels if label not in mapping})
        if unknown:
            raise DataError(f"{self.name}: labels not in the taxonomy: {unknown[:10]}")
        return [mapping[label] for label in labels]


def first_undecodable_byte(path: Path, encoding: str) -> tuple[int, bytes] | None:
    """(offset, bytes) of the first byte sequence of ``path`` (decompressed if .gz) that is not
    valid ``encoding``; None when the whole file decodes."""
    decoder = codecs.getincrementaldecoder(encoding)()
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    offset = 0
    with opener(path, "rb") as handle:
        while block := handle.read(1 << 20):
            pending = len(decoder.getstate()[0])  # an unfinished character of the previous block
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:
                return offset - pending + error.start, error.object[error.start:error.end]
            offset += len(block)
    return None


def read_frame(path: str | Path, encoding: str = "utf-8", encoding_key: str = "encoding") -> pd.DataFrame:
    """A CSV (optionally .gz), JSONL or Parquet file as a DataFrame of strings, or a DataError
    naming the file: not found, unsupported type, empty, unparsable, bad bytes (with their offset
    and the ``encoding_key`` to set)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    kind = READERS.get(path.suffix.lower())
    try:
        if kind == "csv":
            frame = pd.read_csv(path, keep_default_na=False, dtype=str, encoding=encoding)
        elif kind == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False, encoding=encoding)
        elif kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"{path}: unsupported file type {path.suffix!r} (csv, jsonl, parquet)")
    except UnicodeDecodeError as error:
        where = first_undecodable_byte(path, encoding)
        at = f"byte offset {where[0]} ({where[1]!r})" if where else "somewhere"
        raise DataError(f"{path}: not valid {encoding} at {at}; set {encoding_key} to the file's "
                        f"encoding (e.g. {encoding_key}=latin-1)") from error
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{path}: the file is empty (no header, no rows)") from error
    except (pd.errors.ParserError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path}: cannot be parsed as {kind}: {error}") from error
    if len(frame) == 0:
        raise DataError(f"{path}: has no rows (columns: {list(frame.columns)})")
    return frame


def read_table(path: Path, text_column: str = TEXT, label_column: str = LABEL,
               encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV (optionally .gz), JSONL or Parquet file into a clean ``text,label`` frame.

    Raises DataError naming the file, column and row for a missing file or column, an empty
    text or a missing label, a file without rows, and bytes that are not ``encoding`` (with
    their offset). "NA"/"null" stay texts (``keep_default_na=False``).
    """
    frame = read_frame(path, encoding, "dataset.encoding")
    path = Path(path)
    for column in (text_column, label_column):
        if column not in frame.columns:
            raise DataError(
                f"{path}: column {column!r} not found (columns: {list(frame.columns)})"
            )
    frame = pd.DataFrame(
        {TEXT: frame[text_column].astype(str), LABEL: frame[label_column]}
    ).reset_index(drop=True)
    missing = frame[LABEL].isna() | (frame[LABEL].astype(str).str.strip() == "")
    if missing.any():
        row = int(missing.idxmax())
        raise DataError(f"{path}: column {label_column!r} is empty at row {row + 2} (line)")
    frame[LABEL] = frame[LABEL].astype(str).str.strip()
    empty = frame[TEXT].str.strip() == ""
    if empty.any():
        row = int(empty.idxmax())
        raise DataError(
            f"{path}: column {text_column!r} is empty at row {row + 2} (line), label {frame[LABEL][row]!r}"
        )
    return frame


def _find_split(directory: Path, split: str) -> Path | None:
    for suffix in (".csv", ".csv.gz", ".jsonl", ".parquet"):
        candidate = directory / f"{split}{suffix}"
        if candidate.exists():
            return candidate
    return None


def embedded_dir(name: str) -> Path | None:
    """The small real copy shipped inside the package (AG News), if any."""
    folder = resources.files("pgkd") / "embedded" / name
    return Path(str(folder)) if folder.is_dir() else None


def load_hub(hub_id: str, hub_config: str | None, split: str, text_columns: Sequence[str],
             label_column: str) -> pd.DataFrame:
    """Load one split through ``datasets.load_dataset``; ClassLabel ids become class names."""
    import datasets

    try:
        hub = datasets.load_dataset(hub_id, hub_config, split=split)
    except Exception as error:  # the hub raises many types (ConnectionError, FileNotFound, ...)
        raise DatasetUnavailable(f"hub dataset {hub_id!r} split {split!r} unavailable: {error}") from error
    frame = hub.to_pandas()
    text = frame[list(text_columns)].astype(str).agg(". ".join, axis=1)
    feature = hub.features[label_column]
    labels = frame[label_column]
    if isinstance(feature, datasets.ClassLabel):
        labels = labels.map(feature.int2str)
    return pd.DataFrame({TEXT: text, LABEL: labels.astype(str)})


def load_splits(name: str, data_dir: str | Path | None, hub_id: str | None = None,
                hub_config: str | None = None, text_column: str = TEXT, label_column: str = LABEL,
                hub_text_columns: Sequence[str] | None = None, hub_label_column: str = LABEL,
                hub_test_split: str = "test", train_file: str | None = None,
                test_file: str | None = None, encoding: str = "utf-8",
                aliases: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Return (train pool, test split, source description).

    Order: explicit files, ``data_dir/{name or an alias}/{train,test}.*``, the embedded copy, the hub.
    """
    if train_file or test_file:
        if not (train_file and test_file):
            raise DataError(f"dataset {name}: set both train_file and test_file")
        return (read_table(Path(train_file), text_column, label_column, encoding),
                read_table(Path(test_file), text_column, label_column, encoding), f"files {train_file}")
    candidates = [Path(data_dir) / folder for folder in (name, *aliases)] if data_dir else []
    if (embedded := embedded_dir(name)) is not None:
        candidates.append(embedded)
    for folder in candidates:
        train, test = _find_split(folder, "train"), _find_split(folder, "test")
        if train and test:
            return (read_table(train, text_column, label_column, encoding),
                    read_table(test, text_column, label_column, encoding), str(folder))
    if not hub_id:
        raise DatasetUnavailable(
            f"dataset {name}: no local copy (looked in {[str(c) for c in candidates] or 'nothing: PGKD_DATA_DIR unset'}) "
            "and no hub id configured"
        )
    columns = list(hub_text_columns or [TEXT])
    log.info("dataset %s: no local copy, loading %s from the hub", name, hub_id)
    return (load_hub(hub_id, hub_config, "train", columns, hub_label_column),
            load_hub(hub_id, hub_config, hub_test_split, columns, hub_label_column), f"hub {hub_id}")


def taxonomy_of(*frames: pd.DataFrame, order: Sequence[str] | None = None) -> list[str]:
    """All class names of train ∪ test in a stable order (the configured order, else sorted)."""
    present = set().union(*(set(frame[LABEL]) for frame in frames))
    if order:
        missing = sorted(present - set(order))
        if missing:
            raise DataError(f"labels in the data but not in the configured label order: {missing[:10]}")
        return list(order)
    return sorted(present)


def annotated_sample(pool: pd.DataFrame, n_annotated: int, val_fraction: float, seed: int,
                     name: str = "dataset") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Draw ``n_annotated`` rows with ``seed`` and split them train/validation (stratified where
    every class has at least two rows). Returns (train, val, rest of the pool)."""
    if len(pool) < n_annotated:
        raise PoolTooSmall(f"{name}: train pool has {len(pool)} rows, fewer than n_annotated={n_annotated}")
    sample = pool.sample(n=n_annotated, random_state=seed)
    if sample[LABEL].nunique() < 2:
        raise DataError(
            f"{name}: the annotated sample has a single class {sample[LABEL].iloc[0]!r}; need at least two"
        )
    counts = sample[LABEL].value_counts()
    n_val = int(round(n_annotated * val_fraction))
    stratify = sample[LABEL] if counts.min() >= 2 and n_val >= len(counts) else None
    train, val = train_test_split(sample, test_size=n_val, random_state=seed, stratify=stratify)
    rest = pool.drop(index=sample.index)
    return (train.reset_index(drop=True), val.reset_index(drop=True), rest.reset_index(drop=True))


def load_dataset(name: str, data_dir: str | Path | None = None, n_annotated: int = 1000,
                 val_fraction: float = 0.2, seed: int = 0, label_order: Sequence[str] | None = None,
                 test_limit: int | None = None, **source) -> TextDataset:
    """Load a dataset and draw the seeded annotated sample of the PGKD protocol."""
    pool, test, origin = load_splits(name, data_dir, **source)
    if pool[LABEL].nunique() < 2:
        raise DataError(f"{name}: train data ({origin}) has a single class {pool[LABEL].iloc[0]!r}")
    taxonomy = taxonomy_of(pool, test, order=label_order)
    unseen = test[LABEL][~test[LABEL].isin(set(pool[LABEL]))].value_counts()
    if len(unseen):
        # the student can never predict these: every such test row counts as an error
        log.warning("%s: %d test labels never occur in the train pool (%s): %s", name, len(unseen), origin,
                    ", ".join(f"{label!r} ({count})" for label, count in unseen.head(20).items())
                    + (" ..." if len(unseen) > 20 else ""))
    train, val, rest = annotated_sample(pool, n_annotated, val_fraction, seed, name)
    if test_limit and test_limit < len(test):
        test = test.sample(n=test_limit, random_state=seed).reset_index(drop=True)
    log.info("dataset %s from %s: %d classes, train %d, val %d, test %d", name, origin,
             len(taxonomy), len(train), len(val), len(test))
    return TextDataset(name, taxonomy, train, val, test, rest, origin)
