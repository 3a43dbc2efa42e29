"""The ``rerank-pipeline`` parser: help on every option, defaults shown once, lazy imports, ``--no-progress``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rerank_pipeline.cli import build_parser, main
from test_eval_cli import write_beir_folder
from test_eval_protocol import make_dataset

REPO = Path(__file__).resolve().parents[1]
BAR_MARKS = ("it/s]", "s/it]", "%|")  # what a tqdm bar always prints


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (subparsers,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return {"": parser, **subparsers.choices}


def test_every_option_of_every_subcommand_has_help_and_no_default_noise():
    parsers = subcommand_parsers()
    assert {"index", "search", "eval", "train"} <= set(parsers)
    for name, parser in parsers.items():
        missing = [
            action.option_strings[0] for action in parser._actions
            if action.option_strings and not (action.help or "").strip()
        ]
        assert not missing, f"rerank-pipeline {name}: options without help: {missing}"
        text = parser.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, name


def test_defaults_are_shown_once():
    text = subcommand_parsers()["search"].format_help()
    assert "results returned (shown, served) (default: 10)" in " ".join(text.split())
    assert "default 10" not in text


def test_every_subcommand_has_no_progress_and_train_keeps_quiet():
    parsers = subcommand_parsers()
    for name in ("index", "search", "eval", "train"):
        assert "--no-progress" in parsers[name]._option_string_actions, name
    args = build_parser().parse_args(["train", "--quiet", "--output", "out"])
    assert args.no_progress is True


def test_importing_the_cli_and_building_its_parser_stays_light():
    code = (
        "import sys, rerank_pipeline.cli as cli; cli.build_parser(); "
        "heavy = ('torch', 'haystack', 'transformers', 'sentence_transformers', 'numpy', 'yaml', "
        "'rerank_pipeline.eval', 'rerank_pipeline.training.trainer', 'rerank_pipeline.components'); "
        "print([name for name in heavy if name in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


@pytest.fixture(scope="module")
def toy_beir(tmp_path_factory) -> Path:
    return write_beir_folder(tmp_path_factory.mktemp("toy-beir"), make_dataset("toy", seed=3, n_docs=30, n_queries=4))


def _eval(toy_beir, tiny_bert, *flags):
    return main([
        "eval", "--beir-dir", str(toy_beir), "--first-stage", "bm25", "--model", str(tiny_bert),
        "--rerank-k", "5", "--candidates", "10", "--batch-size", "8", *flags,
    ])


def test_no_progress_hides_every_bar_of_a_small_eval(toy_beir, tiny_bert, capfd):
    from huggingface_hub.utils import are_progress_bars_disabled

    assert _eval(toy_beir, tiny_bert) == 0
    shown = capfd.readouterr().err
    assert any(mark in shown for mark in BAR_MARKS)  # model loading and scoring bars, without the flag

    assert _eval(toy_beir, tiny_bert, "--no-progress") == 0
    captured = capfd.readouterr()
    assert "Full ranking" in captured.out
    assert not any(mark in captured.err for mark in BAR_MARKS), captured.err
    assert not are_progress_bars_disabled()  # the switch is restored for whoever runs next in this process


def test_no_progress_from_an_eval_config_file(toy_beir, tiny_bert, tmp_path, capfd):
    config = tmp_path / "eval.yaml"
    config.write_text(json.dumps({"no-progress": True}), encoding="utf-8")
    assert _eval(toy_beir, tiny_bert, "--config", str(config)) == 0
    assert not any(mark in capfd.readouterr().err for mark in BAR_MARKS)
