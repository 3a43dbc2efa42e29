"""``rerank-pipeline serve`` (the pipeline on a Hayhooks server) and ``rerank-pipeline export`` (its Hayhooks YAML).

Heavy imports (Haystack, torch, Hayhooks) happen inside the handlers, so registering these commands costs nothing.
"""

from __future__ import annotations

import argparse
import sys

from rerank_pipeline.cli import add_progress_flag
from rerank_pipeline.options import (
    RankerOptions,
    add_fusion_option,
    add_ranker_options,
    add_result_options,
    non_negative_int,
)
from rerank_pipeline.serving import (
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_NAME,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_SCORE_CACHE,
)

def fusion_line(model: str | None, fusion: str) -> str:
    """The line saying which fusion follows the reranker, e.g. ``fusion: fusion.json of M, weight 0.3 (...)``."""
    from rerank_pipeline.components.score_fusion import resolve_fusion

    return resolve_fusion(model, fusion).summary()


def _check_sizes(args: argparse.Namespace) -> None:
    if args.top_k <= 0 or args.candidates <= 0:
        raise ValueError(f"--top-k and --candidates must be positive (got {args.top_k}, {args.candidates})")


def _pipeline(args: argparse.Namespace):
    from rerank_pipeline.pipelines import build_pipeline

    _check_sizes(args)
    ranker = RankerOptions.from_args(args)
    if ranker.flags_set() and not args.model:
        raise ValueError(f"{', '.join(ranker.flags_set())} set the reranker: pass --model, or drop them")
    return build_pipeline(
        args.index_dir,
        ranker_model=args.model,
        top_k=args.top_k,
        candidates=max(args.candidates, args.top_k),
        ranker_options={**ranker.ranker_kwargs(), "score_cache": args.score_cache} if args.model else None,
        fusion=args.fusion,
    )


def _served_pipeline(args: argparse.Namespace):
    """``--pipeline``'s YAML (e.g. ``tune``'s ``pipeline.yml``), checked as ``eval --pipeline`` loads it; else the
    pipeline of ``--index-dir`` and ``--model``."""
    if not args.pipeline:
        return _pipeline(args)
    from rerank_pipeline.pipelines import load_pipeline_file

    given = [*RankerOptions.from_args(args).flags_set(), *(["--model"] if args.model else [])]
    if given:
        raise ValueError(f"{', '.join(given)}: --pipeline {args.pipeline} holds the reranker's settings; drop them "
                         "or serve --index-dir with --model")
    return load_pipeline_file(args.pipeline)


def run_export(args: argparse.Namespace) -> int:
    """Write the pipeline YAML that ``hayhooks pipeline deploy-yaml`` accepts."""
    from rerank_pipeline.serving import export

    path = export(_pipeline(args), args.output)
    if args.model:
        print(fusion_line(args.model, args.fusion))
    print(f"wrote {path}; deploy it with: HAYSTACK_DESERIALIZATION_ALLOWLIST=rerank_pipeline hayhooks run, then "
          f"hayhooks pipeline deploy-yaml -n {DEFAULT_NAME} {path}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """Bind the port, build the pipeline, deploy it with Hayhooks' run route, load the models, serve."""
    from rerank_pipeline.serving import ServeSettings, hayhooks_yaml, listen, serve

    _check_sizes(args)
    api_key = None
    if args.api_key_env:
        from haystack.utils import Secret

        api_key = Secret.from_env_var(args.api_key_env)
    settings = ServeSettings(
        max_query_chars=args.max_query_chars,
        max_top_k=max(args.candidates, args.top_k),
        max_body_bytes=args.max_body_bytes,
        max_in_flight=args.max_in_flight,
        request_timeout_s=args.request_timeout_s,
        cors_origins=tuple(args.cors_origin or ()),
        api_key=api_key,
    )
    sock = listen(args.host, args.port)  # a busy port fails here, before anything loads
    yaml_text = hayhooks_yaml(_served_pipeline(args))

    def ready(seconds: float) -> None:
        if args.model:
            print(fusion_line(args.model, args.fusion), file=sys.stderr)
        key = f"; send Authorization: Bearer ${args.api_key_env}" if args.api_key_env else ""
        print(
            f"deployed '{args.name}' and loaded its models in {seconds:.1f} s; "
            f"POST http://{args.host}:{args.port}/{args.name}/run with {{\"query\": \"...\"}}{key}",
            file=sys.stderr,
            flush=True,
        )

    serve(yaml_text, name=args.name, host=args.host, port=args.port, on_ready=ready, settings=settings, sock=sock)
    return 0


def _pipeline_options(parser: argparse.ArgumentParser, from_yaml: bool = False) -> None:
    """The pipeline's options; ``from_yaml`` (``serve``) adds ``--pipeline FILE.yml`` instead of ``--index-dir``."""
    if from_yaml:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--index-dir", help="index folder written by `rerank-pipeline index`")
        source.add_argument("--pipeline", metavar="FILE.yml",
                            help="serve this pipeline YAML (`tune`'s pipeline.yml, or `export`'s) instead of "
                                 "--index-dir and --model")
    else:
        parser.add_argument("--index-dir", required=True, help="index folder written by `rerank-pipeline index`")
    parser.add_argument("--model", help="cross-encoder (folder or Hub id) that reranks; without it, first stage only")
    add_result_options(parser)
    add_ranker_options(parser)
    parser.add_argument("--score-cache", type=non_negative_int, default=DEFAULT_SCORE_CACHE, metavar="N",
                        help="pair scores the reranker keeps in memory for repeated queries (an LRU keyed by model, "
                             "query, document id and text; 0: off)")
    add_fusion_option(parser)
    add_progress_flag(parser)


def register(subparsers) -> None:
    """Add ``serve`` and ``export`` to the ``rerank-pipeline`` parser."""
    serve = subparsers.add_parser(
        "serve", help="serve first stage -> cross-encoder as a Hayhooks HTTP endpoint (POST /NAME/run)"
    )
    _pipeline_options(serve, from_yaml=True)
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default: {DEFAULT_PORT})")
    serve.add_argument(
        "--name", default=DEFAULT_NAME, help=f"pipeline name, the URL's first part (default: {DEFAULT_NAME})"
    )
    serve.add_argument("--max-query-chars", type=int, default=DEFAULT_MAX_QUERY_CHARS,
                       help="longest query in characters; a longer one gets 422")
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                       help="largest request body; a larger one gets 413")
    serve.add_argument("--max-in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT,
                       help="search requests running or waiting at once; the next gets 503 with Retry-After")
    serve.add_argument("--request-timeout-s", type=float, default=DEFAULT_REQUEST_TIMEOUT_S,
                       help="seconds a request may take; a slower one gets 503 with Retry-After")
    serve.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                       help="a web origin (https://host[:port]) whose pages may call the server; repeatable "
                            "(default: none, no CORS headers)")
    serve.add_argument("--api-key-env", metavar="VAR",
                       help="require 'Authorization: Bearer <key>' on every request but GET /status, the key read "
                            "from environment variable VAR")
    serve.set_defaults(func=run_serve)

    export = subparsers.add_parser(
        "export", help="write the pipeline YAML that `hayhooks pipeline deploy-yaml` accepts"
    )
    _pipeline_options(export)
    export.add_argument("--output", required=True, help="YAML file to write (e.g. search.yml)")
    export.set_defaults(func=run_export)
