"""``rerank-pipeline eval``: the seed models' R-k protocol and end-to-end metrics on NanoBEIR, BEIR folders and
Hugging Face BEIR datasets, with any first stage and reranker; prints model-card tables, writes reports, and
tests the final ranking against earlier reports (--compare)."""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from rerank_pipeline.cli import add_progress_flag, progress_bars
from rerank_pipeline.options import (
    END_TO_END_MODES,
    EVAL_FIRST_STAGES,
    RERANKER_KINDS,
    DeprecatedAlias,
    FirstStageOptions,
    RankerOptions,
    add_candidates_option,
    add_deprecated_alias,
    add_first_stage_options,
    add_fusion_option,
    add_ranker_options,
    positive_int,
    renamed_option,
)

logger = logging.getLogger(__name__)

COLLECTION_OPTIONS = ("nanobeir", "beir_dir", "hf_dataset", "nanobeir_id", "nanobeir_layout", "hf_qrels_id",
                      "hf_qrels_subset", "split", "max_queries")
"""Options that pick the collections: shared by every system of a ``systems:`` config."""
POSITIVE_SETTINGS = {"true": [True], "false": [False], "both": [True, False]}
_PARSER: argparse.ArgumentParser | None = None


def register(subparsers) -> None:
    """Add the ``eval`` subcommand to the ``rerank-pipeline`` parser."""
    global _PARSER
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a reranker: R-k protocol (model-card table) and full-ranking metrics",
        description=__doc__,
    )
    source = parser.add_argument_group("collection (one of)")
    source.add_argument("--nanobeir", nargs="+", metavar="NAME", help="NanoBEIR sets by short name (msmarco nfcorpus nq ...); needs the Hub or --nanobeir-id PATH")
    source.add_argument("--beir-dir", nargs="+", metavar="PATH",
                        help="BEIR folders (one or more): corpus.jsonl, queries.jsonl, qrels/<split>.tsv; several give one summary table")
    source.add_argument("--hf-dataset", metavar="ID", help="Hugging Face dataset in BEIR schema (corpus, queries subsets; qrels in --hf-qrels-id)")
    source.add_argument("--config", metavar="YAML", help="read options from a YAML file (keys = long option names); the command line wins")
    source.add_argument("--nanobeir-id", default=None, help="NanoBEIR dataset id or local folder (default: sentence-transformers/NanoBEIR-en, or Nano{name}-bm25 with the per-dataset layout)")
    source.add_argument("--nanobeir-layout", choices=("collection", "per-dataset"), default="collection",
                        help="one dataset with a subset per NanoBEIR set, or one dataset per set")
    source.add_argument("--hf-qrels-id", default=None, help="dataset holding the qrels (default: --hf-dataset)")
    source.add_argument("--hf-qrels-subset", default="default", help="subset of the qrels dataset ('none' for none)")
    source.add_argument("--split", default="test", help="qrels split (BEIR folder / HF dataset)")
    source.add_argument("--max-queries", type=positive_int, default=None, metavar="N", help="evaluate only the first N judged queries")
    source.add_argument("--encoding", default="utf-8", help="text encoding of a BEIR folder's files (e.g. latin-1)")
    source.add_argument("--on-bad-line", choices=("stop", "skip"), default="stop", help="malformed line in a BEIR folder's files (bad JSON, missing fields, bytes not in --encoding): stop or skip (counted)")
    source.add_argument("--on-duplicate", choices=("last", "first", "error"), default="last", help="a corpus or query id seen again in a BEIR folder: keep the last, the first, or stop; counted and reported")

    stage = parser.add_argument_group("first stage")
    stage.add_argument("--pipeline", metavar="FILE.yml", default=None,
                       help="evaluate this Haystack pipeline YAML (query in, documents out; e.g. from `rerank-pipeline export`) "
                            "instead of --first-stage/--model: full-ranking metrics of its output, and of its first stage "
                            "when it holds a CrossEncoderRanker")
    add_first_stage_options(
        stage, kinds=EVAL_FIRST_STAGES, default=None,
        help="candidates: the dataset's published lists (NanoBEIR default) or our own first stage (default bm25)",
        embedding_help="bi-encoder for dense/hybrid first stages; with elasticsearch, kNN on the cluster fused with its BM25",
    )
    stage.add_argument("--index-dir", default=None, help="reuse / keep the first-stage index here (bm25 without it: "
                       "streamed into a temporary folder, removed at the end)")
    stage.add_argument("--first-stage-option", action="append", default=[], metavar="KEY=VALUE", help="extra build_first_stage option (e.g. url=http://localhost:9200)")
    candidates = add_candidates_option(stage, None, help="first-stage depth: candidates retrieved per query "
                                                          "(default max(100, rerank-k))")
    add_deprecated_alias(stage, "--top-k", candidates)

    rerank = parser.add_argument_group("reranker")
    rerank.add_argument("--model", default=None, help="cross-encoder (or bi-encoder with --reranker bi-encoder): Hub id or folder")
    rerank.add_argument("--reranker", choices=RERANKER_KINDS, default="cross-encoder",
                        help="how --model scores a pair: cross-encoder logits, bi-encoder cosine, or identity (first-stage order)")
    rerank.add_argument("--no-rerank", action="store_true", help="no model: report the first stage (identity reranker)")
    rerank.add_argument("--batch-size", type=int, default=64, help="pairs scored per forward pass")
    rerank.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda when available)")
    add_ranker_options(rerank)

    protocol = parser.add_argument_group("protocol and reports")
    protocol.add_argument("--rerank-k", type=int, default=100, help="candidates reranked per query")
    protocol.add_argument("--at-k", type=int, default=10, help="cut-off of MRR@k and nDCG@k in the protocol")
    protocol.add_argument("--always-rerank-positives", choices=tuple(POSITIVE_SETTINGS), default="true", help="put every positive into the reranked set (the model-card protocol); 'both' runs the two")
    protocol.add_argument("--end-to-end", choices=END_TO_END_MODES, default="auto", help="full-ranking metrics (ir_measures); auto = on for our own first stage")
    add_fusion_option(protocol)  # end to end only: the R-k protocol always measures the reranker alone
    protocol.add_argument("--output", default=None, help="write metrics.json, metrics.csv, per_query.csv, *.trec, chart.png, COMMAND.txt here (a new or empty folder, or a previous report, replaced as a whole)")
    protocol.add_argument("--overwrite", action="store_true", help="replace an --output folder that holds other files")
    protocol.add_argument("--compare", nargs="+", metavar="RUN_DIR", default=None,
                          help="earlier --output folders (same collections and judged queries): per metric, their final "
                               "ranking against this run's, paired t-test and randomization test (Bonferroni over several); "
                               "a table after the report's, 'comparisons' in metrics.json, comparisons.csv")
    add_progress_flag(protocol)
    parser.set_defaults(func=run)
    _PARSER = parser


def _apply_config(args: argparse.Namespace) -> None:
    if not args.config:
        return
    path = Path(args.config)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    import yaml

    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values")
    systems = config.pop("systems", None)
    if systems is not None and (not isinstance(systems, list) or not systems):
        raise ValueError(f"{path}: 'systems' must be a non-empty list of option mappings")
    args.systems = systems
    actions = {action.dest: action for action in _PARSER._actions if not isinstance(action, DeprecatedAlias)}
    for key, value in config.items():
        dest = renamed_option("eval", key)
        if not hasattr(args, dest) or dest in ("func", "command", "config"):
            raise ValueError(f"{path}: unknown option {key!r}")
        if getattr(args, dest) == _PARSER.get_default(dest):  # the command line wins
            if dest == "always_rerank_positives" and isinstance(value, bool):
                value = str(value).lower()
            if dest in ("nanobeir", "first_stage_option", "beir_dir", "compare") and not isinstance(value, list):
                value = [value]  # ``nanobeir: msmarco`` is one name, not a list of its letters
            setattr(args, dest, _typed(actions.get(dest), value, f"{path}: {key}"))


def _typed(action: argparse.Action | None, value, where: str):
    """A config file's scalar checked by the option's argparse ``type``, as on the command line."""
    if action is None or action.type is None or value is None or isinstance(value, list):
        return value
    try:
        return action.type(str(value))
    except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
        raise ValueError(f"{where}: {error}") from None


def command_line(args: argparse.Namespace) -> str:
    """The effective command (non-default options), as written to COMMAND.txt."""
    parts = ["rerank-pipeline", "eval"]
    for action in _PARSER._actions:
        if not action.option_strings or action.dest in ("help", "config") or isinstance(action, DeprecatedAlias):
            continue
        value = getattr(args, action.dest, None)
        always_shown = action.dest == "split" and not args.nanobeir
        if value is None or (value == action.default and not always_shown):
            continue
        option = action.option_strings[0]
        if isinstance(value, bool):
            parts.append(option)
        elif isinstance(value, list):
            if action.dest == "first_stage_option":
                for item in value:
                    parts += [option, str(item)]
            else:
                parts += [option, *map(str, value)]
        else:
            parts += [option, str(value)]
    return shlex.join(parts)


def _parse_options(items: list[str]) -> dict:
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--first-stage-option expects KEY=VALUE, got {item!r}")
        options[key] = yaml.safe_load(value)
    return options


def load_datasets(args: argparse.Namespace):
    """The collections the options name (exactly one of --nanobeir, --beir-dir, --hf-dataset), cut to --max-queries."""
    from rerank_pipeline.datasets import load_beir, load_hf_beir, load_nanobeir
    from rerank_pipeline.eval.experiment import limit_queries

    chosen = [name for name in ("nanobeir", "beir_dir", "hf_dataset") if getattr(args, name)]
    if len(chosen) != 1:
        raise ValueError("give exactly one of --nanobeir, --beir-dir, --hf-dataset")
    if args.nanobeir:
        datasets = [load_nanobeir(name, dataset_id=args.nanobeir_id, layout=args.nanobeir_layout) for name in args.nanobeir]
    elif args.beir_dir:
        datasets = [load_beir(path, split=args.split, encoding=args.encoding, on_bad_line=args.on_bad_line,
                              on_duplicate=args.on_duplicate) for path in args.beir_dir]
        names = [dataset.name for dataset in datasets]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"--beir-dir: several folders are named {repeated[0]!r}; each collection needs its own name")
    else:
        subset = None if str(args.hf_qrels_subset).lower() == "none" else args.hf_qrels_subset
        datasets = [load_hf_beir(args.hf_dataset, split=args.split, qrels_id=args.hf_qrels_id, qrels_subset=subset)]
    return [limit_queries(dataset, args.max_queries) for dataset in datasets]


def run(args: argparse.Namespace) -> int:
    """Evaluate as the command line and ``--config`` ask (the file may set ``no-progress`` too)."""
    from rerank_pipeline.provenance import PhaseTimer

    timer = PhaseTimer(since_process_start=True)  # "done in" is the command's whole wall time
    _apply_config(args)
    with progress_bars(not args.no_progress):
        return _evaluate(args, timer)


def _evaluate(args: argparse.Namespace, timer) -> int:
    """Check the options before any work, then evaluate."""
    if args.rerank_k < 1 or args.at_k < 1:
        raise ValueError("--rerank-k and --at-k must be >= 1")
    if args.pipeline:
        clashing = [option for option, value in (("--first-stage", args.first_stage), ("--model", args.model),
                    ("--index-dir", args.index_dir), ("--no-rerank", args.no_rerank),
                    ("--fusion", args.fusion != "model")) if value]
        if clashing:
            raise ValueError(f"--pipeline brings its own first stage and ranker: drop {', '.join(clashing)}")
        if not Path(args.pipeline).is_file():
            raise FileNotFoundError(f"--pipeline: no such file: {args.pipeline}")
    _check_output_paths(args)
    return _run_systems(args, timer)


def _run_systems(args: argparse.Namespace, timer) -> int:
    from rerank_pipeline.provenance import PhaseTimer

    systems = getattr(args, "systems", None)
    if not systems:
        evaluate_system(args, timer)
        print(f"done in {timer.elapsed():.1f} s (wall time of the command since its process started)")
        return 0
    runs = []
    for index, options in enumerate(systems):
        system_args = _system_args(args, options, index)
        output = Path(args.output) / system_args.system_name if args.output else None
        system_args.output = str(output) if output else None
        print(f"\n=== system {system_args.system_name} ===")
        runs.append(evaluate_system(system_args, PhaseTimer()))  # each system's own phases
    _print_and_write_summary(runs, args)
    print(f"done in {timer.elapsed():.1f} s (wall time of the command, all systems)")
    return 0


def _system_args(args: argparse.Namespace, options, index: int) -> argparse.Namespace:
    """A copy of ``args`` with one ``systems:`` entry's options applied (the entry's ``name`` names the system)."""
    if not isinstance(options, dict):
        raise ValueError(f"systems[{index}]: expected a mapping of option names to values, got {options!r}")
    system = argparse.Namespace(**vars(args))
    system.systems = None
    system.system_name = str(options.get("name") or f"system{index + 1}")
    for key, value in options.items():
        if key == "name":
            continue
        dest = renamed_option("eval", key)
        if dest in COLLECTION_OPTIONS or not hasattr(args, dest) or dest in ("func", "command", "config", "output"):
            raise ValueError(f"systems[{index}] ({system.system_name}): {key!r} is not a system option")
        if dest == "first_stage_option" and not isinstance(value, list):
            value = [value]
        setattr(system, dest, value)
    return system


def evaluate_system(args: argparse.Namespace, timer):
    """Evaluate one system (:func:`rerank_pipeline.evaluate`) on every collection the arguments name; print its
    tables and write its report. Returns the :class:`~rerank_pipeline.eval.experiment.Evaluation`."""
    with timer.phase("import"):
        from rerank_pipeline.eval.compare import check_same_collections, compare_with_earlier_runs, load_earlier_runs
        from rerank_pipeline.eval.experiment import evaluate
        from rerank_pipeline.provenance import header_lines

    if not (args.pipeline or args.model or args.no_rerank or args.reranker == "identity"):
        raise ValueError(f"--model is required for the {args.reranker} reranker (or --no-rerank: the first stage alone)")
    earlier_runs = load_earlier_runs(args.compare)  # before any work: each folder must be a report
    pipeline = None
    if args.pipeline:
        from rerank_pipeline.pipelines import load_pipeline_file

        with timer.phase("load model"):  # a refused or broken YAML stops here, before the collections load
            pipeline = load_pipeline_file(args.pipeline)
    with timer.phase("load"):
        datasets = load_datasets(args)
    check_same_collections(earlier_runs, datasets)
    no_model = args.no_rerank or args.reranker == "identity"
    result = evaluate(
        datasets, pipeline, first_stage=FirstStageOptions.from_args(args).kind, model=None if no_model else args.model,
        reranker=args.reranker, ranker_options=RankerOptions.from_args(args).ranker_kwargs(), fusion=args.fusion, candidates=args.candidates,
        rerank_k=args.rerank_k, at_k=args.at_k,
        always_rerank_positives=POSITIVE_SETTINGS[str(args.always_rerank_positives).lower()],
        end_to_end={"auto": None, "on": True, "off": False}[args.end_to_end], embedding_model=args.embedding_model,
        index_dir=args.index_dir, first_stage_options=_parse_options(args.first_stage_option),
        batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
        name=getattr(args, "system_name", "system"), timer=timer, log=lambda line: print(line, flush=True),
    )
    if args.pipeline:
        result.settings["first_stage"] = f"pipeline {args.pipeline}"
    result.command = command_line(args)
    _print_result(result, args.at_k)
    comparison = compare_with_earlier_runs(earlier_runs, result.protocol, result.end_to_end, result.reranked)
    if comparison:
        print("\n" + comparison.console())
    print("\n" + "\n".join(header_lines(result.provenance)))
    if args.output:
        written = result.save(args.output, overwrite=args.overwrite, comparison=comparison)
        print(f"\nwrote {len(written)} files to {args.output}")
    return result


def _print_result(result, at_k: int) -> None:
    """The R-k protocol's lines and table (model-card shape) and the full ranking's table."""
    from rerank_pipeline.eval.metrics import relevance_kind
    from rerank_pipeline.eval.reports import base_reranked_lines, end_to_end_table, protocol_table
    from rerank_pipeline.eval.significance import SIGNIFICANCE_NOTE

    settings, reranked = result.settings, result.reranked
    for label, suite in result.protocol.items():
        print(f"\nR{settings['rerank_k']} protocol (sentence-transformers' reranking evaluator: top {settings['rerank_k']} "
              f"candidates, {label}={label == 'always_rerank_positives'}, binary relevance, fractions)"
              + ("" if reranked else ": first-stage order only, nothing reranked"))
        for protocol in suite.results:
            stats = protocol.stats
            print(
                f"{protocol.prefix}: Queries: {stats['queries']}  Positives: Min {stats['positives_min']:.1f}, Mean "
                f"{stats['positives_mean']:.1f}, Max {stats['positives_max']:.1f}  Negatives: Min {stats['negatives_min']:.1f}, "
                f"Mean {stats['negatives_mean']:.1f}, Max {stats['negatives_max']:.1f}"
            )
            if reranked:
                print(base_reranked_lines(protocol.metrics, at_k))
        if suite.with_aggregate and reranked:
            print(f"{suite.prefix}: aggregated")
            print(base_reranked_lines(suite.aggregate, at_k))
        print()
        print(protocol_table(suite, reranked=reranked))
        if reranked:
            print(SIGNIFICANCE_NOTE)
    if result.end_to_end:
        datasets = result.datasets
        relevance = ", ".join(sorted({f"{relevance_kind(d.qrels)} ({d.name})" for d in datasets})) if len(datasets) > 1 \
            else relevance_kind(datasets[0].qrels)
        print(f"\nFull ranking (ir_measures; relevance detected from the qrels: {relevance}; fractions), "
              f"first stage {settings['first_stage']} top {settings['top_k']}" + ("" if reranked else ", nothing reranked"))
        print(end_to_end_table(result.end_to_end))
        if reranked:
            print(SIGNIFICANCE_NOTE)
        for end_to_end in result.end_to_end:
            if end_to_end.truncation is not None:
                print(("" if len(datasets) == 1 else f"{end_to_end.name}: ") + end_to_end.truncation.line())
    if result.pairs_scored is not None:
        print(f"\nscored {result.pairs_scored} distinct (query, document) pairs once; {result.pairs_reused} repeats "
              f"answered from those scores (the protocol and the full ranking share their pairs)")


def _print_and_write_summary(runs: list, args: argparse.Namespace) -> None:
    """One table over collections (and their mean) x systems, first stage vs reranked with the paired tests; one
    chart; ``summary.json`` / ``summary.csv`` beside the per-system reports."""
    from rerank_pipeline.eval.reports import summary_table, write_summary
    from rerank_pipeline.eval.significance import SIGNIFICANCE_NOTE

    title, table = summary_table(runs)
    print(f"\n=== summary: {title} ===")
    print(table)
    print(SIGNIFICANCE_NOTE)
    if args.output:
        written = write_summary(args.output, runs)
        print(f"\nwrote {len(written)} summary files to {args.output}")


def _check_output_paths(args: argparse.Namespace) -> None:
    """Refuse an unusable ``--output`` or ``--index-dir`` before any work (see :mod:`rerank_pipeline.output_paths`)."""
    from rerank_pipeline.components.index_folder import check_index_dir
    from rerank_pipeline.eval.experiment import REPORT_MARKER
    from rerank_pipeline.output_paths import check_replaceable_folder, check_writable_folder

    if args.output:
        check_replaceable_folder(args.output, REPORT_MARKER, "output folder", args.overwrite, "--overwrite")
    if args.index_dir and args.nanobeir and len(args.nanobeir) > 1:
        check_writable_folder(args.index_dir, "index folder")  # one index per dataset below it
    elif args.index_dir:
        check_index_dir(args.index_dir)
