"""Datasets: loading, taxonomy, the seeded annotated sample, and clear errors on bad input."""

from __future__ import annotations

import pandas as pd
import pytest

from pgkd.data import DataError, DatasetUnavailable, annotated_sample, load_dataset, read_table
from tests.conftest import data_dir, needs_shared_data


def write_csv(path, rows, columns=("text", "label")):
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def test_embedded_ag_news_loads_without_data_dir():
    data = load_dataset("ag_news", None, n_annotated=1000, seed=0)
    assert data.taxonomy == ["Business", "Sci/Tech", "Sports", "World"]
    assert (len(data.train), len(data.val), len(data.test)) == (800, 200, 7600)
    assert "embedded" in data.source


def test_same_seed_same_sample_and_seeds_differ():
    a = load_dataset("ag_news", None, n_annotated=300, seed=3)
    b = load_dataset("ag_news", None, n_annotated=300, seed=3)
    c = load_dataset("ag_news", None, n_annotated=300, seed=4)
    pd.testing.assert_frame_equal(a.train, b.train)
    pd.testing.assert_frame_equal(a.val, b.val)
    assert set(a.train.text) != set(c.train.text)
    assert not set(a.train.text) & set(a.val.text)


def test_split_is_stratified_80_20():
    data = load_dataset("ag_news", None, n_annotated=1000, seed=0)
    shares = data.val.label.value_counts(normalize=True)
    overall = pd.concat([data.train, data.val]).label.value_counts(normalize=True)
    assert (shares - overall).abs().max() < 0.01


@needs_shared_data
def test_taxonomy_keeps_classes_absent_from_the_sample():
    data = load_dataset("amzn_reviews", data_dir(), n_annotated=1000, seed=0)
    assert len(data.taxonomy) == 363
    assert data.train.label.nunique() < 363
    assert data.ids(data.test.label)  # every test label maps to a head index


def test_na_and_null_stay_texts(tmp_path):
    path = write_csv(tmp_path / "t.csv", [("NA", "a"), ("null", "b"), ("x", "a")])
    frame = read_table(path)
    assert list(frame.text) == ["NA", "null", "x"]


@pytest.mark.parametrize("rows, match", [
    ([("ok", "a"), ("", "b")], r"column 'text' is empty at row 3"),
    ([("ok", "a"), ("fine", "")], r"column 'label' is empty at row 3"),
])
def test_empty_text_or_label_names_file_column_row(tmp_path, rows, match):
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=match) as error:
        read_table(path)
    assert "bad.csv" in str(error.value)


def test_missing_file_and_missing_column(tmp_path):
    with pytest.raises(DataError, match="nope.csv: file not found"):
        read_table(tmp_path / "nope.csv")
    path = write_csv(tmp_path / "cols.csv", [("t", "a")], columns=("body", "label"))
    with pytest.raises(DataError, match=r"cols.csv: column 'text' not found \(columns: \['body', 'label'\]\)"):
        read_table(path)


def test_fewer_rows_than_n_annotated_and_single_class(tmp_path):
    pool = pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": ["a", "b"] * 5})
    with pytest.raises(DataError, match="has 10 rows, fewer than n_annotated=20"):
        annotated_sample(pool, 20, 0.2, 0, "mine")
    train = write_csv(tmp_path / "train.csv", [(f"t{i}", "only") for i in range(30)])
    test = write_csv(tmp_path / "test.csv", [("x", "only")])
    with pytest.raises(DataError, match="single class 'only'"):
        load_dataset("csv", n_annotated=10, train_file=str(train), test_file=str(test))


def test_jsonl_and_parquet_with_custom_columns(tmp_path):
    frame = pd.DataFrame({"body": [f"text {i}" for i in range(40)], "y": ["p", "q"] * 20})
    frame.to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "test.parquet")
    data = load_dataset("csv", n_annotated=20, text_column="body", label_column="y",
                        train_file=str(tmp_path / "train.jsonl"), test_file=str(tmp_path / "test.parquet"))
    assert data.taxonomy == ["p", "q"] and len(data.test) == 40


def test_unknown_label_in_ids_is_named():
    data = load_dataset("ag_news", None, n_annotated=100, seed=0)
    with pytest.raises(DataError, match="not in the taxonomy: \\['Cooking'\\]"):
        data.ids(["World", "Cooking"])


def test_no_local_copy_and_no_hub_is_unavailable(tmp_path):
    with pytest.raises(DatasetUnavailable, match="yahoo_answers"):
        load_dataset("yahoo_answers", tmp_path, hub_id="community-datasets/yahoo_answers_topics")


def test_hub_path_maps_class_ids_to_names(tmp_path):
    """The `datasets.load_dataset` path, fed a local folder laid out like a hub repo."""
    import datasets

    features = datasets.Features({"title": datasets.Value("string"), "body": datasets.Value("string"),
                                  "topic": datasets.ClassLabel(names=["Sports", "Politics"])})
    (tmp_path / "repo" / "data").mkdir(parents=True)
    for split, n in (("train", 60), ("test", 20)):
        rows = {"title": [f"{split} title {i}" for i in range(n)], "body": [f"body {i}" for i in range(n)],
                "topic": [i % 2 for i in range(n)]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "repo" / "data" / f"{split}-00000.parquet")
    data = load_dataset("mine", tmp_path / "no-local-copy", n_annotated=50, seed=1, hub_id=str(tmp_path / "repo"),
                        hub_text_columns=["title", "body"], hub_label_column="topic")
    assert data.taxonomy == ["Politics", "Sports"] and data.source.startswith("hub ")
    assert data.test.text[0] == "test title 0. body 0" and data.test.label[0] == "Sports"


# --- regression tests: bad data files as a new user meets them ---------------------------------

def test_csv_with_a_header_and_no_rows_names_the_file(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\n")
    with pytest.raises(DataError, match=r"train\.csv: has no rows"):
        read_table(path)


def test_undecodable_bytes_name_the_file_the_offset_and_the_option(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("text,label\ncafé au lait,food\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"train\.csv: not valid utf-8 at byte offset 14 .*dataset\.encoding"):
        read_table(path)
    assert read_table(path, encoding="latin-1").text[0] == "café au lait"


def test_dataset_encoding_option_reaches_the_reader(compose, tmp_path):
    rows = [(f"café numéro {i}", "a" if i % 2 else "b") for i in range(40)]
    for name in ("train", "test"):
        pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / f"{name}.csv", index=False, encoding="latin-1")
    cfg = compose("dataset=csv", f"dataset.train_file={tmp_path / 'train.csv'}",
                  f"dataset.test_file={tmp_path / 'test.csv'}", "dataset.n_annotated=20", "dataset.encoding=latin-1")
    from hydra.utils import instantiate

    assert instantiate(cfg.dataset).train.text.str.startswith("café").all()


def test_test_labels_missing_from_the_train_pool_are_named_once(tmp_path, caplog):
    train = write_csv(tmp_path / "train.csv", [(f"text {i}", "ab"[i % 2]) for i in range(30)])
    test = write_csv(tmp_path / "test.csv", [("x", "a"), ("y", "z"), ("w", "z"), ("v", "q")])
    with caplog.at_level("WARNING", logger="pgkd.data"):
        load_dataset("mine", None, n_annotated=20, train_file=str(train), test_file=str(test))
    warnings = [r.getMessage() for r in caplog.records if "never occur in the train pool" in r.getMessage()]
    assert len(warnings) == 1 and "'z' (2)" in warnings[0] and "'q' (1)" in warnings[0]


def test_a_pool_smaller_than_n_annotated_is_recorded_as_skipped(compose, tmp_path):
    from pgkd.experiment import run

    train = write_csv(tmp_path / "train.csv", [(f"text {i}", "ab"[i % 2]) for i in range(50)])
    test = write_csv(tmp_path / "test.csv", [(f"t {i}", "ab"[i % 2]) for i in range(10)])
    cfg = compose("debug=fdr", "dataset=csv", f"dataset.train_file={train}", f"dataset.test_file={test}",
                  "dataset.n_annotated=100")
    metrics = run(cfg, tmp_path / "run")
    assert metrics["status"] == "skipped" and "fewer than n_annotated=100" in metrics["reason"]
