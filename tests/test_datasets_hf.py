"""NanoBEIR and Hugging Face BEIR-schema loaders, tested on local folders in the Hub's layout (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset
from sentence_transformers import CrossEncoder
from sentence_transformers.cross_encoder.evaluation import CrossEncoderNanoBEIREvaluator

from rerank_pipeline.datasets import DatasetError, RetrievalDataset, load_hf_beir, load_nanobeir, nanobeir_dataset_name
from rerank_pipeline.eval import rerank_protocol_suite
from test_eval_protocol import assert_same_metrics, make_dataset


def write_hub_repo(root: Path, tables: dict[str, dict[str, list[dict]]]) -> Path:
    """Write ``{subset: {split: rows}}`` as parquet files plus the README ``configs`` a Hub dataset repo has."""
    lines = ["---", "configs:"]
    for subset, splits in tables.items():
        lines += [f"- config_name: {subset}", "  data_files:"]
        for split, rows in splits.items():
            path = Path(subset) / f"{split}.parquet"
            (root / subset).mkdir(parents=True, exist_ok=True)
            Dataset.from_list(rows).to_parquet(str(root / path))
            lines += [f"  - split: {split}", f"    path: {path.as_posix()}"]
    (root / "README.md").write_text("\n".join([*lines, "---", ""]), encoding="utf-8")
    return root


def collection_tables(datasets: dict[str, RetrievalDataset]) -> dict[str, dict[str, list[dict]]]:
    """The ``sentence-transformers/NanoBEIR-en`` layout: subsets corpus/queries/qrels/bm25, split per dataset."""
    tables: dict[str, dict[str, list[dict]]] = {"corpus": {}, "queries": {}, "qrels": {}, "bm25": {}}
    for short, dataset in datasets.items():
        split = nanobeir_dataset_name(short)
        judged = dataset.judged_queries()
        tables["corpus"][split] = [{"_id": d, "text": doc["text"]} for d, doc in dataset.corpus.items()]
        tables["queries"][split] = [{"_id": q, "text": t} for q, t in dataset.queries.items()]
        tables["qrels"][split] = [{"query-id": q, "corpus-id": d} for q in judged for d in dataset.positives(q)]
        tables["bm25"][split] = [{"query-id": q, "corpus-ids": dataset.rankings[q]} for q in judged]
    return tables


@pytest.fixture(scope="module")
def nano_datasets():
    return {"msmarco": make_dataset("NanoMSMARCO", seed=3), "nfcorpus": make_dataset("NanoNFCorpus", seed=4)}


@pytest.fixture(scope="module")
def nano_collection(tmp_path_factory, nano_datasets) -> Path:
    return write_hub_repo(tmp_path_factory.mktemp("NanoBEIR-en"), collection_tables(nano_datasets))


def test_load_nanobeir_collection_layout(nano_collection, nano_datasets, tmp_path):
    loaded = load_nanobeir("msmarco", dataset_id=str(nano_collection), cache_dir=str(tmp_path))
    source = nano_datasets["msmarco"]
    assert loaded.name == "NanoMSMARCO"
    assert set(loaded.queries) == set(source.judged_queries())
    assert loaded.rankings == {q: source.rankings[q] for q in source.judged_queries()}
    assert {q: set(r) for q, r in loaded.qrels.items()} == {q: set(source.positives(q)) for q in source.judged_queries()}
    assert loaded.document_text("d3") == source.document_text("d3")


def test_load_nanobeir_per_dataset_layout(tmp_path, nano_datasets):
    source = nano_datasets["nfcorpus"]
    judged = source.judged_queries()
    tables = {
        "corpus": {"train": [{"_id": d, "title": "", "text": doc["text"]} for d, doc in source.corpus.items()]},
        "queries": {"train": [{"_id": q, "text": t} for q, t in judged.items()]},
        "relevance": {"train": [
            {"query-id": q, "positive-corpus-ids": source.positives(q), "bm25-ranked-ids": source.rankings[q]} for q in judged
        ]},
    }
    root = write_hub_repo(tmp_path / "NanoNFCorpus-bm25", tables)
    loaded = load_nanobeir("nfcorpus", dataset_id=str(tmp_path / "Nano{name}-bm25"), layout="per-dataset", cache_dir=str(tmp_path / "cache"))
    assert root.name == "NanoNFCorpus-bm25"
    assert loaded.rankings == {q: source.rankings[q] for q in judged}
    assert loaded.qrels == {q: {d: 1 for d in source.positives(q)} for q in judged}


@pytest.mark.parametrize("always_rerank_positives", [True, False])
def test_nanobeir_suite_equals_sentence_transformers(tiny_bert, nano_collection, always_rerank_positives, tmp_path):
    model = CrossEncoder(str(tiny_bert), device="cpu")
    theirs = CrossEncoderNanoBEIREvaluator(
        ["msmarco", "nfcorpus"], dataset_id=str(nano_collection), rerank_k=15,
        always_rerank_positives=always_rerank_positives, batch_size=16, write_csv=False,
    )(model)
    items = [(load_nanobeir(name, dataset_id=str(nano_collection), cache_dir=str(tmp_path)), None) for name in ("msmarco", "nfcorpus")]
    ours = rerank_protocol_suite(items, model, rerank_k=15, always_rerank_positives=always_rerank_positives, batch_size=16)
    assert "NanoBEIR_R15_mean_ndcg@10" in theirs
    assert_same_metrics(ours.flat(), theirs)


def test_nanobeir_errors(nano_collection, tmp_path):
    with pytest.raises(DatasetError, match="not a NanoBEIR dataset"):
        load_nanobeir("wikipedia")
    with pytest.raises(DatasetError, match="NanoSciFact"):  # split missing from the collection
        load_nanobeir("scifact", dataset_id=str(nano_collection), cache_dir=str(tmp_path))
    with pytest.raises(DatasetError, match="layout"):
        load_nanobeir("nq", layout="zip")


def beir_tables(dataset: RetrievalDataset, split: str = "test") -> dict:
    return {
        "corpus": {"corpus": [{"_id": d, "title": doc["title"], "text": doc["text"]} for d, doc in dataset.corpus.items()]},
        "queries": {"queries": [{"_id": q, "text": t} for q, t in dataset.queries.items()]},
        "default": {split: [{"query-id": q, "corpus-id": d, "score": g} for q, rels in dataset.qrels.items() for d, g in rels.items()]},
    }


def test_load_hf_beir_schema(tmp_path):
    source = make_dataset("toy", seed=5)
    root = write_hub_repo(tmp_path / "mteb-toy", beir_tables(source))
    loaded = load_hf_beir(str(root), split="test", cache_dir=str(tmp_path / "cache"))
    assert loaded.qrels == source.qrels
    assert set(loaded.queries) == set(source.qrels)  # the unjudged query is left out
    assert loaded.corpus == source.corpus
    with pytest.raises(DatasetError, match="split 'dev'"):
        load_hf_beir(str(root), split="dev", cache_dir=str(tmp_path / "cache"))


def test_hf_beir_unknown_document_and_empty_queries(tmp_path):
    source = make_dataset("toy", seed=6)
    tables = beir_tables(source)
    tables["default"]["test"].append({"query-id": "q1", "corpus-id": "ghost", "score": 1})
    root = write_hub_repo(tmp_path / "broken", tables)
    with pytest.raises(DatasetError, match="'ghost'"):
        load_hf_beir(str(root), cache_dir=str(tmp_path / "cache"))
    tables = beir_tables(source)
    tables["default"]["test"] = [{"query-id": "nobody", "corpus-id": "d1", "score": 1}]
    root = write_hub_repo(tmp_path / "no-queries", tables)
    with pytest.raises(DatasetError, match="not in the queries"):
        load_hf_beir(str(root), cache_dir=str(tmp_path / "cache"))


def test_published_ranking_naming_unknown_document_is_rejected():
    dataset = make_dataset()
    dataset.rankings["q1"] = ["d1", "ghost"]
    with pytest.raises(DatasetError, match="ghost"):
        dataset.validate()
