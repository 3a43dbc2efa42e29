"""``rerank_pipeline.options``: one place for every choice list, typed option groups, deprecated flag aliases."""

from __future__ import annotations

import argparse
import ast
import json
import warnings
from pathlib import Path

import pytest

from rerank_pipeline import options
from rerank_pipeline.cli import build_parser, main
from rerank_pipeline.options import FirstStageOptions, RankerOptions
from test_cli_options import subcommand_parsers

PACKAGE = Path(options.__file__).parent
CHOICE_LISTS = {name: value for name, value in vars(options).items()
                if name.isupper() and isinstance(value, tuple) and all(isinstance(item, str) for item in value)}


def test_no_module_but_options_spells_out_a_choice_list():
    """Every tuple or set literal of strings in the package that equals (or reorders) one of options' lists is a copy."""
    lists = {frozenset(value): name for name, value in CHOICE_LISTS.items() if len(value) > 1}
    copies = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "options.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.Set, ast.List)) and node.elts and all(
                isinstance(item, ast.Constant) and isinstance(item.value, str) for item in node.elts
            ):
                key = frozenset(item.value for item in node.elts)
                if key in lists and len(node.elts) > 1:
                    copies.append(f"{path.relative_to(PACKAGE)}:{node.lineno} copies {lists[key]}")
    assert not copies, copies
    assert {"RANKER_ENGINES", "PRECISIONS", "LONG_DOCUMENT_POLICIES", "FUSION_METHODS", "FIRST_STAGE_KINDS",
            "EVAL_FIRST_STAGES", "TRAINING_FIRST_STAGES", "RERANKER_KINDS"} <= set(CHOICE_LISTS)


def test_every_choices_of_the_cli_is_one_of_options_lists():
    """Each ``choices=`` of a ranker, first-stage or fusion flag is (the same object as) a list of options.py."""
    flags = {"--engine": options.RANKER_ENGINES, "--fusion": options.FUSION_METHODS,
             "--long-document": options.LONG_DOCUMENT_POLICIES, "--reranker": options.RERANKER_KINDS,
             "--precision": options.PRECISIONS, "--loss": options.LOSSES, "--distillation": options.DISTILLATION_MODES,
             "--end-to-end": options.END_TO_END_MODES}
    seen = set()
    for name, parser in subcommand_parsers().items():
        for flag, expected in flags.items():
            action = parser._option_string_actions.get(flag)
            if action is not None:
                assert action.choices is expected, (name, flag)
                seen.add(flag)
        first_stage = parser._option_string_actions.get("--first-stage")
        if first_stage is not None:
            kinds = {"index": options.FIRST_STAGE_KINDS, "eval": options.EVAL_FIRST_STAGES,
                     "train": options.TRAINING_FIRST_STAGES,
                     "tune": options.TRAINING_FIRST_STAGES}[name]
            aliases = [alias for alias, kind in options.FIRST_STAGE_ALIASES.items() if kind in kinds]
            assert tuple(first_stage.choices) == (*kinds, *aliases), name
            seen.add("--first-stage")
    assert seen == {*flags, "--first-stage"}


def test_the_components_check_against_the_same_lists():
    from rerank_pipeline.components import CrossEncoderRanker
    from rerank_pipeline.components.score_fusion import resolve_fusion
    from rerank_pipeline.first_stage import build_first_stage
    from rerank_pipeline.training.config import TrainingConfig

    with pytest.raises(ValueError, match=r"backend must be one of \('torch', 'openvino'\)"):
        CrossEncoderRanker("m", backend="tensorrt")
    with pytest.raises(ValueError, match="choose one of model, none, rrf"):
        resolve_fusion(None, "weighted")
    with pytest.raises(ValueError, match="choose one of bm25, dense, hybrid, elasticsearch"):
        build_first_stage("solr")
    with pytest.raises(ValueError, match=r"first_stage must be one of \('bm25', 'dense', 'hybrid'\)"):
        TrainingConfig(first_stage="elasticsearch")


def test_cross_encoder_ranker_takes_model_positionally_and_the_rest_by_keyword():
    from rerank_pipeline.components import CrossEncoderRanker

    with pytest.raises(TypeError, match="positional"):
        CrossEncoderRanker("m", "cpu")  # was top_k="cpu" silently
    assert CrossEncoderRanker("m", top_k=3).to_dict()["init_parameters"]["top_k"] == 3


def test_cross_encoder_ranker_serializes_every_init_parameter_once():
    import inspect

    from rerank_pipeline.components import CrossEncoderRanker

    names = [name for name in inspect.signature(CrossEncoderRanker.__init__).parameters if name != "self"]
    ranker = CrossEncoderRanker("m", calibration_pairs=[("q", "d")], backend="openvino", quantize=True)
    data = ranker.to_dict()["init_parameters"]
    assert list(data) == names
    assert data["calibration_pairs"] == [["q", "d"]] and data["backend"] == "openvino"
    assert CrossEncoderRanker.from_dict(json.loads(json.dumps(ranker.to_dict()))).to_dict() == ranker.to_dict()


@pytest.mark.parametrize(("argv", "dest", "value", "message"), [
    (["index", "--jsonl", "x", "--backend", "faiss"], "first_stage", "faiss", "--backend is deprecated; use --first-stage"),
    (["search", "q", "--index-dir", "i", "--backend", "openvino"], "engine", "openvino", "--backend is deprecated; use --engine"),
    (["serve", "--index-dir", "i", "--backend", "openvino"], "engine", "openvino", "use --engine"),
    (["export", "--index-dir", "i", "--output", "o", "--backend", "openvino"], "engine", "openvino", "use --engine"),
    (["eval", "--backend", "openvino"], "engine", "openvino", "use --engine"),
    (["eval", "--top-k", "30"], "candidates", 30, "--top-k is deprecated; use --candidates"),
])
def test_a_deprecated_flag_warns_and_still_sets_the_new_option(argv, dest, value, message, capsys):
    with pytest.warns(DeprecationWarning, match=message):
        args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert message in capsys.readouterr().err
    assert not hasattr(args, "backend")  # the old name sets the new option only


def test_the_new_flags_do_not_warn(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        args = build_parser().parse_args(["eval", "--engine", "openvino", "--candidates", "30"])
    assert (args.engine, args.candidates) == ("openvino", 30) and capsys.readouterr().err == ""


def test_a_deprecated_flag_keeps_its_choices_and_type():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["index", "--jsonl", "x", "--backend", "solr"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--top-k", "0"])


def test_top_k_is_results_returned_and_candidates_the_first_stage_depth_everywhere():
    parsers = subcommand_parsers()
    for name in ("search", "serve", "export"):
        assert parsers[name].get_default("top_k") == 10 and parsers[name].get_default("candidates") == 100, name
    assert "first-stage depth" in parsers["eval"]._option_string_actions["--candidates"].help
    assert parsers["eval"]._option_string_actions["--top-k"].help.startswith("deprecated")
    assert "--top-k" not in parsers["index"]._option_string_actions


def test_eval_config_file_reads_the_old_key_under_the_new_name(tmp_path, capsys):
    from rerank_pipeline.cli import evaluate

    config = tmp_path / "eval.yaml"
    config.write_text("top-k: 30\nbackend: openvino\n", encoding="utf-8")
    args = build_parser().parse_args(["eval", "--config", str(config)])
    with pytest.warns(DeprecationWarning):
        evaluate._apply_config(args)
    assert (args.candidates, args.engine) == (30, "openvino")
    assert "'top-k' is deprecated; use 'candidates'" in capsys.readouterr().err
    assert "--top-k" not in evaluate.command_line(args) and "--candidates 30" in evaluate.command_line(args)


def test_ranker_options_from_args_give_the_rankers_keyword_arguments():
    parser = argparse.ArgumentParser()
    options.add_ranker_options(parser)
    args = parser.parse_args(["--engine", "openvino", "--quantize", "--long-document", "max_passage",
                              "--max-passages", "4"])
    ranker = RankerOptions.from_args(args)
    assert ranker.ranker_kwargs() == {"backend": "openvino", "precision": "auto", "quantize": True, "max_length": None,
                                      "long_document": "max_passage", "allow_untrained_head": False, "max_passages": 4}
    assert ranker.flags_set() == ["--engine", "--quantize", "--long-document", "--max-passages"]
    assert ranker.describe() == "openvino, int8, max_passage, max_passages 4"
    assert RankerOptions().flags_set() == [] and "max_passages" not in RankerOptions().ranker_kwargs()
    with pytest.raises(ValueError, match="engine must be one of"):
        RankerOptions(engine="tensorrt")


@pytest.mark.parametrize("command", ["search", "serve", "export", "eval"])
def test_precision_flag_reaches_the_rankers_keywords_on_every_ranker_subcommand(command):
    required = {"search": ["q", "--index-dir", "x"], "serve": ["--index-dir", "x"],
                "export": ["--index-dir", "x", "--output", "x.yml"], "eval": []}[command]
    args = build_parser().parse_args([command, *required, "--precision", "bf16"])
    ranker = RankerOptions.from_args(args)
    assert ranker.precision == "bf16" and ranker.ranker_kwargs()["precision"] == "bf16"
    assert ranker.flags_set() == ["--precision"] and ranker.describe() == "torch, bf16"
    assert RankerOptions.from_kwargs(ranker.ranker_kwargs()) == ranker  # the inverse of ranker_kwargs
    assert RankerOptions.from_args(build_parser().parse_args([command, *required])).precision == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, *required, "--precision", "int4"])
    with pytest.raises(ValueError, match="precision must be one of .*got 'int4'"):
        RankerOptions(precision="int4")


def test_first_stage_options_from_index_flags():
    args = build_parser().parse_args(["index", "--jsonl", "x", "--first-stage", "faiss", "--index-type", "HNSW32",
                                      "--k1", "1.2"])
    first_stage = FirstStageOptions.from_args(args)
    assert first_stage.kind == "dense"  # the alias, canonical
    assert first_stage.settings == {"index_type": "HNSW32"}  # k1 has no BM25 side to go to
    assert first_stage.build_kwargs() == {"index_dir": None, "embedding_model": None, "index_type": "HNSW32"}
    hybrid = build_parser().parse_args(["index", "--jsonl", "x", "--first-stage", "hybrid", "--rrf-k", "5",
                                        "--fusion-depth", "50", "--b", "0.5"])
    assert FirstStageOptions.from_args(hybrid).settings == {"b": 0.5, "rrf_k": 5, "fusion_depth": 50}
    evaluate = build_parser().parse_args(["eval", "--first-stage", "published", "--candidates", "7"])
    assert FirstStageOptions.from_args(evaluate, settings={"k1": 1.0}) == FirstStageOptions(
        kind="published", candidates=7, settings={"k1": 1.0})
    with pytest.raises(ValueError, match="unknown first stage 'solr'"):
        FirstStageOptions(kind="solr")


def test_ranker_flags_without_a_model_are_refused(tmp_path, capsys):
    assert main(["export", "--index-dir", str(tmp_path), "--output", str(tmp_path / "x.yml"), "--engine", "openvino"]) == 2
    assert "--engine set the reranker: pass --model" in capsys.readouterr().err


def test_the_options_module_imports_only_the_standard_library():
    imported = set()
    for node in ast.walk(ast.parse(Path(options.__file__).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "argparse", "collections", "sys", "warnings", "dataclasses", "typing"}, imported
