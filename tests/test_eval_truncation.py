"""``eval`` says how many reranked candidates the cross-encoder's window cut, and by how much (metrics.json too)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from rerank_pipeline import evaluate
from rerank_pipeline.cli import main
from rerank_pipeline.datasets import load_beir
from rerank_pipeline.eval.end_to_end import Truncation
from test_eval_cli import write_beir_folder
from test_eval_protocol import make_dataset

WINDOW = 16  # the toy documents run 7 to 21 tokens: some fit, some are cut
RERANK_K = 10


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory):
    return write_beir_folder(tmp_path_factory.mktemp("truncation-beir"), make_dataset("toy", seed=3, n_docs=50))


def direct_figures(tokenizer, dataset, trec_path) -> Truncation:
    """Count by the tokenizer itself over the top RERANK_K of the first-stage run: document tokens alone, minus the
    second segment the truncated pair keeps (BERT's token_type_ids, less the final [SEP])."""
    ranked: dict[str, list[str]] = {}
    for line in trec_path.read_text(encoding="utf-8").splitlines():
        qid, _, doc_id, *_ = line.split()
        ranked.setdefault(qid, []).append(doc_id)
    counts = []
    for qid, doc_ids in ranked.items():
        for doc_id in doc_ids[:RERANK_K]:
            query, text = dataset.queries[qid], dataset.document_text(doc_id)
            alone = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            pair = tokenizer(query, text, truncation="longest_first", max_length=WINDOW)
            counts.append(alone - (sum(pair["token_type_ids"]) - 1))
    return Truncation.from_counts(counts, WINDOW)


def test_eval_reports_the_truncated_candidates(beir_dir, tiny_bert, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["eval", "--beir-dir", str(beir_dir), "--split", "test", "--first-stage", "bm25", "--model",
                 str(tiny_bert), "--rerank-k", str(RERANK_K), "--candidates", "20", "--max-length", str(WINDOW),
                 "--no-progress", "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    dataset = load_beir(beir_dir, split="test")
    expected = direct_figures(AutoTokenizer.from_pretrained(str(tiny_bert)), dataset,
                              out / f"{beir_dir.name}_first_stage.trec")
    assert 0 < expected.truncated < expected.candidates  # some fit, some are cut
    figures = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["end_to_end"][beir_dir.name]["truncation"]
    assert figures == {**expected.__dict__, "share": expected.share}
    assert expected.line() in printed
    assert f"{expected.truncated:,} of {expected.candidates:,} candidates" in printed
    assert "cut by the 16-token window" in printed

    # the Python call gives the same figures; a MaxP ranker and the first stage alone report none
    result = evaluate(str(beir_dir), first_stage="bm25", model=str(tiny_bert), rerank_k=RERANK_K, candidates=20,
                      ranker_options={"max_length": WINDOW})
    assert result.end_to_end[0].truncation == expected
    maxp = evaluate(str(beir_dir), first_stage="bm25", model=str(tiny_bert), rerank_k=RERANK_K, candidates=20,
                    ranker_options={"max_length": WINDOW, "long_document": "max_passage"})
    assert maxp.end_to_end[0].truncation is None
    assert evaluate(str(beir_dir), first_stage="bm25").end_to_end[0].truncation is None


def test_truncation_figures():
    figures = Truncation.from_counts([0, 5, 0, 12, 1], 512)
    assert (figures.candidates, figures.truncated, figures.tokens_cut_max, figures.tokens_cut_total) == (5, 3, 12, 18)
    assert figures.tokens_cut_mean == pytest.approx(6.0) and figures.share == pytest.approx(0.6)
    assert figures.line() == ("truncation: 3 of 5 candidates (60.0%) cut by the 512-token window; "
                              "tokens cut mean 6, max 12")
    none = Truncation.from_counts([], 128)
    assert (none.share, none.tokens_cut_mean, none.tokens_cut_max) == (0.0, 0.0, 0)


def test_eval_of_a_pipeline_reports_what_its_ranker_cut(beir_dir, tiny_bert, tmp_path, capsys):
    index, exported = tmp_path / "index", tmp_path / "search.yml"
    assert main(["index", "--beir-dir", str(beir_dir), "--index-dir", str(index), "--no-progress"]) == 0
    assert main(["export", "--index-dir", str(index), "--model", str(tiny_bert), "--candidates", str(RERANK_K),
                 "--max-length", str(WINDOW), "--output", str(exported)]) == 0
    out = tmp_path / "report"
    assert main(["eval", "--pipeline", str(exported), "--beir-dir", str(beir_dir), "--split", "test",
                 "--no-progress", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    dataset = load_beir(beir_dir, split="test")
    expected = direct_figures(AutoTokenizer.from_pretrained(str(tiny_bert)), dataset,
                              out / f"{beir_dir.name}_first_stage.trec")  # the candidates the pipeline's ranker got
    assert 0 < expected.truncated < expected.candidates
    figures = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["end_to_end"][beir_dir.name]["truncation"]
    assert figures == {**expected.__dict__, "share": expected.share} and expected.line() in printed
