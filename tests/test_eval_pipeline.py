"""``eval --pipeline``: the pipeline a user serves, measured on judgements, equals ``eval --first-stage --model``."""

from __future__ import annotations

import json

import pytest

from rerank_pipeline.cli import main
from test_eval_cli import beir_dir  # noqa: F401  (fixture)


@pytest.mark.parametrize("backend", ["bm25", "hybrid"])
def test_exported_pipeline_and_first_stage_plus_model_give_identical_metrics(backend, beir_dir, tiny_bert, minilm_path,  # noqa: F811
                                                                            tmp_path, capsys):
    index = tmp_path / "index"
    embedding = ["--embedding-model", str(minilm_path)] if backend == "hybrid" else []
    assert main(["index", "--beir-dir", str(beir_dir), "--first-stage", backend, "--index-dir", str(index), *embedding]) == 0
    yaml_file = tmp_path / "pipeline.yml"
    assert main(["export", "--index-dir", str(index), "--model", str(tiny_bert), "--top-k", "20", "--candidates", "20",
                 "--output", str(yaml_file)]) == 0
    common = ["eval", "--beir-dir", str(beir_dir), "--split", "test", "--no-progress"]
    assert main([*common, "--pipeline", str(yaml_file), "--output", str(tmp_path / "served")]) == 0
    assert main([*common, "--first-stage", backend, "--index-dir", str(index), "--model", str(tiny_bert),
                 "--rerank-k", "20", "--candidates", "20", "--output", str(tmp_path / "built")]) == 0
    served = json.loads((tmp_path / "served" / "metrics.json").read_text())["end_to_end"]
    built = json.loads((tmp_path / "built" / "metrics.json").read_text())["end_to_end"]
    assert served.keys() == built.keys() == {beir_dir.name}
    for ranking in ("first_stage", "reranked"):
        assert served[beir_dir.name][ranking] == pytest.approx(built[beir_dir.name][ranking], abs=1e-9)
    assert served[beir_dir.name]["reranked"] != served[beir_dir.name]["first_stage"]  # the ranker did rerank
    served_run = (tmp_path / "served" / f"{beir_dir.name}_reranked.trec").read_text().split("\n")
    built_run = (tmp_path / "built" / f"{beir_dir.name}_reranked.trec").read_text().split("\n")
    assert [line.split()[:3] for line in served_run if line][:20] == [line.split()[:3] for line in built_run if line][:20]


def test_pipeline_refuses_its_own_first_stage_options_before_work(beir_dir, tmp_path, capsys):  # noqa: F811
    yaml_file = tmp_path / "pipeline.yml"
    yaml_file.write_text("components: {}\nconnections: []\n")
    assert main(["eval", "--beir-dir", str(beir_dir), "--pipeline", str(yaml_file), "--model", "x"]) == 2
    assert "--pipeline brings its own first stage and ranker: drop --model" in capsys.readouterr().err
    assert main(["eval", "--beir-dir", str(beir_dir), "--pipeline", str(tmp_path / "missing.yml")]) == 2
    assert "no such file" in capsys.readouterr().err
