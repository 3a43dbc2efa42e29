"""Bad input and interruptions: nothing lost, nothing silent (docs/bad_input.md has one row per case)."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from rerank_pipeline.cli import main
from rerank_pipeline.datasets import DatasetError, load_beir, load_corpus
from tiny_models import make_tiny_bert_cross_encoder, make_tiny_bert_encoder

DOCS = [
    {"_id": "1", "title": "panel flutter", "text": "supersonic flutter of thin wing panels"},
    {"_id": "2", "title": "", "text": "heat transfer to a blunt body in hypersonic flow"},
    {"_id": "3", "title": "", "text": "laminar boundary layer on a flat plate"},
]


def write_corpus(path: Path, rows=DOCS, raw_lines: dict[int, bytes] | None = None) -> Path:
    """A JSONL corpus; ``raw_lines`` replaces line N (1-based) by the given bytes."""
    lines = [json.dumps(row).encode() for row in rows]
    for number, raw in (raw_lines or {}).items():
        lines[number - 1] = raw
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    return make_tiny_bert_encoder(tmp_path_factory.mktemp("tiny-encoder"))


# ---------------------------------------------------------------- 1. index folders


def test_index_refuses_a_folder_of_other_files_and_the_current_folder(tmp_path, capsys, monkeypatch):
    corpus = write_corpus(tmp_path / "docs.jsonl")
    (tmp_path / "keep.txt").write_text("keep")
    before = sorted(path.name for path in tmp_path.iterdir())
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "index", "--jsonl", "docs.jsonl", "--index-dir", ".")
    assert code == 2 and "already holds other files" in one_line(err)
    assert sorted(path.name for path in tmp_path.iterdir()) == before and (tmp_path / "keep.txt").read_text() == "keep"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.md").write_text("mine")
    code, _, err = run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", other)
    assert code == 2 and [path.name for path in other.iterdir()] == ["notes.md"]


def test_index_refuses_a_file_and_a_path_under_a_file(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "docs.jsonl")
    target = tmp_path / "index"
    target.write_text("not an index")
    code, _, err = run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", target)
    assert code == 2 and "is a file" in one_line(err)
    assert target.read_text() == "not an index" and not list(tmp_path.glob(".index.*"))
    code, _, err = run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", target / "sub")
    assert code == 2 and f"{target} is a file" in one_line(err)


def test_index_writes_into_an_empty_folder_and_replaces_an_index(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "docs.jsonl")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", empty)[0] == 0
    assert (empty / "index.json").is_file()
    code, out, _ = run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", empty, "--rebuild")
    assert code == 0 and "indexed 3 documents" in out


def test_only_the_staging_folders_this_package_marked_are_removed(tmp_path, capsys):
    from rerank_pipeline.components.index_folder import STAGING_MARKER

    corpus = write_corpus(tmp_path / "docs.jsonl")
    dead_pid = 2**22 + 12345  # above Linux's pid_max default: no such process
    marked = [tmp_path / f".idx.tmp-{dead_pid}-abc", tmp_path / f".idx.old-{dead_pid}-x"]
    foreign = [tmp_path / ".idx.tmp-legacy", tmp_path / f".idx.old-{dead_pid}-someone-elses"]
    for folder in (*marked, *foreign):
        folder.mkdir()
        (folder / "documents.jsonl").write_text("{}\n")
    for folder in marked:
        (folder / STAGING_MARKER).write_text(json.dumps({"creator": "rerank-pipeline", "pid": dead_pid}))
    assert run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", tmp_path / "idx")[0] == 0
    assert not any(folder.exists() for folder in marked)  # left by a killed run of ours: removed
    assert all((folder / "documents.jsonl").read_text() == "{}\n" for folder in foreign)  # not ours: untouched


# ---------------------------------------------------------------- 2. duplicate ids


def test_duplicate_ids_are_counted_and_the_policy_applies(tmp_path, capsys):
    rows = [DOCS[0], DOCS[1], {**DOCS[0], "text": "the second copy of document 1"}]
    corpus = write_corpus(tmp_path / "docs.jsonl", rows)
    code, out, err = run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", tmp_path / "last")
    assert code == 0 and "indexed 2 documents" in out
    assert f"{corpus}: 3 lines, 2 unique ids; 1 duplicate id, last kept: '1'" in err
    from rerank_pipeline.components.bm25 import EmbeddedBM25DocumentStore

    texts = {doc.id: doc.content for doc in EmbeddedBM25DocumentStore(index_dir=tmp_path / "last").filter_documents()}
    assert texts["1"] == "the second copy of document 1"
    code, _, _ = run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", tmp_path / "first", "--on-duplicate", "first")
    assert code == 0
    texts = {doc.id: doc.content for doc in EmbeddedBM25DocumentStore(index_dir=tmp_path / "first").filter_documents()}
    assert texts["1"] == DOCS[0]["text"]
    code, _, err = run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", tmp_path / "err",
                           "--on-duplicate", "error")
    assert code == 2 and f"{corpus}:3: id '1' already appeared on line 1" in one_line(err)
    assert not (tmp_path / "err").exists()


def test_duplicate_ids_in_the_python_api(tmp_path, caplog):
    corpus = write_corpus(tmp_path / "corpus.jsonl", [DOCS[0], {**DOCS[0], "text": "again"}, DOCS[1]])
    with caplog.at_level(logging.WARNING, logger="rerank_pipeline.datasets"):
        assert load_corpus(corpus)["1"]["text"] == "again"
    assert "3 lines, 2 unique ids; 1 duplicate id, last kept: '1'" in caplog.text
    assert load_corpus(corpus, on_duplicate="first")["1"]["text"] == DOCS[0]["text"]
    with pytest.raises(DatasetError, match=r"corpus.jsonl:2: id '1' already appeared on line 1"):
        load_corpus(corpus, on_duplicate="error")
    with pytest.raises(ValueError, match="on_duplicate must be one of"):
        load_corpus(corpus, on_duplicate="newest")


# ---------------------------------------------------------------- 3. head-less checkpoints


def test_a_checkpoint_without_a_trained_head_is_refused_unless_allowed(tiny_encoder):
    from rerank_pipeline.components import CrossEncoderRanker
    from rerank_pipeline.components.ranker.loading import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"has no trained scoring head \(its config.json names the architecture "
                                             r"BertModel.*rerank-pipeline train --base-model"):
        CrossEncoderRanker(str(tiny_encoder), device="cpu").warm_up()
    allowed = CrossEncoderRanker(str(tiny_encoder), device="cpu", allow_untrained_head=True)
    assert len(allowed.predict([("wing", "a wing panel")])) == 1
    restored = CrossEncoderRanker.from_dict(allowed.to_dict())
    assert restored.allow_untrained_head is True and CrossEncoderRanker("x").allow_untrained_head is False


def test_a_classifier_config_whose_weights_lack_the_head_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from rerank_pipeline.components import CrossEncoderRanker
    from rerank_pipeline.components.ranker.loading import ModelLoadError

    folder = make_tiny_bert_cross_encoder(tmp_path / "headless")
    weights = load_file(folder / "model.safetensors")
    save_file({name: tensor for name, tensor in weights.items() if not name.startswith("classifier.")},
              folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="its weights lack classifier.bias, classifier.weight"):
        CrossEncoderRanker(str(folder), device="cpu").warm_up()


def test_search_and_eval_refuse_a_head_less_model_in_one_line(tmp_path, tiny_encoder, capsys):
    corpus = write_corpus(tmp_path / "docs.jsonl")
    assert run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", tmp_path / "idx")[0] == 0
    code, _, err = run_cli(capsys, "search", "flutter", "--index-dir", tmp_path / "idx", "--model", tiny_encoder)
    assert code == 2 and "--allow-untrained-head" in err.splitlines()[-1]
    code, out, _ = run_cli(capsys, "search", "flutter", "--index-dir", tmp_path / "idx", "--model", tiny_encoder,
                           "--allow-untrained-head", "--json")
    assert code == 0 and json.loads(out)["reranked"] is True


# ---------------------------------------------------------------- 4. output paths


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory) -> Path:
    from test_eval_cli import write_beir_folder
    from test_eval_protocol import make_dataset

    return write_beir_folder(tmp_path_factory.mktemp("toy-beir"), make_dataset("toy", seed=7, n_docs=50))


def fail_if_called(*args, **kwargs):
    raise AssertionError("the work started before the output path was checked")


def test_eval_output_is_checked_before_any_work(beir_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("rerank_pipeline.cli.evaluate.load_datasets", fail_if_called)
    existing_file = tmp_path / "report"
    existing_file.write_text("x")
    for output, message in ((existing_file, "is a file"), (existing_file / "sub", "is a file")):
        code, _, err = run_cli(capsys, "eval", "--beir-dir", beir_dir, "--no-rerank", "--output", output)
        assert code == 2 and message in one_line(err)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.md").write_text("mine")
    code, _, err = run_cli(capsys, "eval", "--beir-dir", beir_dir, "--no-rerank", "--output", folder)
    assert code == 2 and "--overwrite" in one_line(err) and (folder / "notes.md").read_text() == "mine"


def test_eval_replaces_a_previous_report_or_an_overwritten_folder_as_a_whole(beir_dir, tmp_path, capsys):
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "metrics.json").write_text("{}")
    (previous / "stale.trec").write_text("old run")
    base = ["eval", "--beir-dir", beir_dir, "--no-rerank", "--no-progress", "--always-rerank-positives", "true"]
    assert run_cli(capsys, *base, "--output", previous)[0] == 0
    assert not (previous / "stale.trec").exists() and json.loads((previous / "metrics.json").read_text())["protocol"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.md").write_text("mine")
    assert run_cli(capsys, *base, "--output", other, "--overwrite")[0] == 0
    assert not (other / "notes.md").exists() and (other / "COMMAND.txt").is_file()


def test_train_output_and_report_dir_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("rerank_pipeline.training.judgements.load_training_collection", fail_if_called)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    cases = [(["--output", a_file], "is a file"), (["--output", a_file / "model"], "is a file"),
             (["--output", tmp_path / "model", "--report-dir", a_file / "sub"], "is a file")]
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):  # root writes anywhere
        cases.append((["--output", locked / "model"], "no write permission"))
    locked.chmod(0o500)
    try:
        for options, message in cases:
            code, _, err = run_cli(capsys, "train", "--beir-dir", tmp_path, *options)
            assert code == 2 and message in one_line(err)
        assert not (tmp_path / "model").exists() and not list(locked.iterdir())
    finally:
        locked.chmod(0o700)


def test_train_refused_for_bad_data_leaves_no_output_folder(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--beir-dir", tmp_path / "missing", "--output", tmp_path / "model")
    assert code == 2 and not (tmp_path / "model").exists()


# ---------------------------------------------------------------- 5. encoding


def test_non_utf8_corpus_line_is_reported_skipped_or_decoded(tmp_path, capsys):
    latin = json.dumps({"_id": "2", "text": "caf\u00e9 flow"}, ensure_ascii=False).encode("latin-1")
    corpus = write_corpus(tmp_path / "docs.jsonl", raw_lines={2: latin})
    code, _, err = run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", tmp_path / "a")
    assert code == 2 and f"{corpus}:2: not utf-8 text (byte 0xe9" in one_line(err)
    code, out, err = run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", tmp_path / "b", "--on-bad-line", "skip")
    assert code == 0 and "indexed 2 documents" in out and "skipped 1 malformed line(s): 2" in err
    code, out, _ = run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", tmp_path / "c", "--encoding", "latin-1")
    assert code == 0 and "indexed 3 documents" in out


def test_non_utf8_queries_and_qrels_name_file_and_line(tmp_path):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    write_corpus(root / "corpus.jsonl")
    (root / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "flutter"}\n{"_id": "q2", "text": "caf\xe9"}\n')
    (root / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\t1\t1\nq2\t2\t1\n")
    with pytest.raises(DatasetError, match=r"queries.jsonl:2: not utf-8 text"):
        load_beir(root, "test")
    assert list(load_beir(root, "test", on_bad_line="skip").queries) == ["q1"]
    assert load_beir(root, "test", encoding="latin-1").queries["q2"] == "caf\u00e9"
    (root / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "flutter"}\n')
    (root / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\t1\t1\nq\xe9\t2\t1\n")
    with pytest.raises(DatasetError, match=r"test.tsv:3: not utf-8 text"):
        load_beir(root, "test", encoding="utf-8", on_bad_line="stop")


# ---------------------------------------------------------------- 6. interruptions


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_is_one_line_and_status_130_in_every_subcommand(tmp_path, capsys, monkeypatch, beir_dir):
    corpus = write_corpus(tmp_path / "docs.jsonl")
    assert run_cli(capsys, "index", "--jsonl", corpus, "--index-dir", tmp_path / "idx")[0] == 0
    monkeypatch.setattr("rerank_pipeline.first_stage.build_first_stage", interrupt)
    monkeypatch.setattr("rerank_pipeline.pipelines.search", interrupt)
    monkeypatch.setattr("rerank_pipeline.cli.evaluate.load_datasets", interrupt)
    for argv in (
        ["index", "--jsonl", corpus, "--index-dir", tmp_path / "new-index"],
        ["search", "flutter", "--index-dir", tmp_path / "idx", "--no-rerank"],
        ["eval", "--beir-dir", beir_dir, "--no-rerank", "--output", tmp_path / "report"],
    ):
        code, _, err = run_cli(capsys, *argv)
        assert code == 130 and one_line(err) == f"rerank-pipeline {argv[0]}: interrupted; nothing written"
    assert not (tmp_path / "new-index").exists() and not (tmp_path / "report").exists()


def test_train_interrupted_before_its_first_checkpoint_leaves_nothing(tmp_path, capsys, monkeypatch):
    from test_training_cli import write_beir
    from test_training import toy_collection

    beir = write_beir(tmp_path / "beir", toy_collection(), test_share=0.0)
    output = tmp_path / "model"
    argv = ["train", "--beir-dir", beir, "--base-model", "unused", "--output", output, "--first-stage", "bm25",
            "--self-supervised-pairs", "0", "--quiet"]
    monkeypatch.setattr("rerank_pipeline.training.trainer.load_base_model", interrupt)
    code, _, err = run_cli(capsys, *argv)
    assert code == 130 and one_line(err) == "rerank-pipeline train: interrupted; nothing written"
    assert not output.exists()  # the training config written before the interruption went with it

    def checkpoint_then_interrupt(config):
        (output / "checkpoints" / "checkpoint-5").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr("rerank_pipeline.training.trainer.load_base_model", checkpoint_then_interrupt)
    code, _, err = run_cli(capsys, *argv)
    assert code == 130 and "rerun with --resume" in one_line(err) and (output / "checkpoints").is_dir()


# ---------------------------------------------------------------- 7. bounded MaxP


def test_max_passage_scores_at_most_max_passages_and_names_the_document(tiny_bert, caplog):
    from haystack import Document

    from rerank_pipeline.components import CrossEncoderRanker

    long_text = " ".join(["boundary layer flow over a flat plate at mach number"] * 60)
    documents = [Document(id="long-doc", content=long_text), Document(id="short", content="a wing")]
    counts = {}
    for cap in (None, 2):
        ranker = CrossEncoderRanker(str(tiny_bert), device="cpu", long_document="max_passage", max_passages=cap)
        ranker.warm_up()
        original = ranker._scorer.encoded_logits

        def counting(encoded, *args, cap=cap, original=original, **kwargs):
            counts[cap] = len(encoded["input_ids"])  # passage windows scored
            return original(encoded, *args, **kwargs)

        ranker._scorer.encoded_logits = counting
        with caplog.at_level(logging.WARNING, logger="rerank_pipeline.components.ranker"):
            caplog.clear()
            ranker.run(query="flat plate", documents=documents)
        assert ("'long-doc'" in caplog.text) == (cap is not None)
    assert counts[2] == 2 + 1 and counts[None] > 2 + 1
    assert re.search(r"first 2 passages \(max_passages\) of 1 document\(s\): 'long-doc' \(\d+ passages\)", caplog.text)
    assert CrossEncoderRanker("x").max_passages == 32
    with pytest.raises(ValueError, match="max_passages"):
        CrossEncoderRanker("x", max_passages=0)


# ---------------------------------------------------------------- 8. the table in docs/bad_input.md


def test_every_row_of_the_bad_input_table_names_existing_tests():
    import ast

    root = Path(__file__).resolve().parents[1]
    lines = (root / "docs" / "bad_input.md").read_text(encoding="utf-8").splitlines()
    separator = lambda line: line.startswith("|") and set(line) <= set("|-: ")  # noqa: E731
    rows = [line for line, following in zip(lines, [*lines[1:], ""])  # a table's header is followed by its separator
            if line.startswith("|") and not separator(line) and not separator(following)]
    assert len(rows) >= 20
    for row in rows:
        references = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row)
        assert references, f"row without a test: {row}"
        for path, name in references:
            tree = ast.parse((root / path).read_text(encoding="utf-8"))
            assert name in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}, f"{path}::{name}"
