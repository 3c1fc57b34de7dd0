"""The `aggregator` command: a thin layer that loads settings and calls the stages.

Exit codes: 0 success, 1 a runtime failure (database, files), 2 invalid settings
or arguments. Every error is one line naming the file, key, variable, source,
database or path at fault; database errors are translated once, in `main`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aggregator import database_errors, logs
from aggregator.errors import AggregatorError, ConfigError
from aggregator.settings import (
    DEFAULT_CONFIG,
    ClusterSettings,
    Settings,
    check_source,
    load_settings,
    with_values,
)

if TYPE_CHECKING:
    from aggregator.store import Store

log = logging.getLogger("aggregator")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_CONFIG
    try:
        return int(args.handler(args) or EXIT_OK)
    except ConfigError as exc:
        for problem in exc.problems:  # every mistake, one per line
            _error(str(problem))
        return EXIT_CONFIG
    except Exception as exc:
        # Database errors are translated here, once, for every command.
        url = _database_url(args)
        if url is not None and database_errors.is_database_error(exc):
            _error(database_errors.describe(exc, url))
            return EXIT_FAILURE
        if isinstance(exc, AggregatorError):
            _error(str(exc))
            return EXIT_FAILURE
        if isinstance(exc, OSError) and exc.filename is not None:  # a folder we cannot make...
            _error(f"{exc.filename}: {exc.strerror}; check the path and who may write there")
            return EXIT_FAILURE
        raise
    except KeyboardInterrupt:
        return EXIT_OK


def _error(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)


def _database_url(args: argparse.Namespace) -> str | None:
    """The database the command opened: known once `_settings` has read the settings."""
    settings = getattr(args, "settings", None)
    return settings.resolved_database_url if isinstance(settings, Settings) else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aggregator",
        description="Poll news feeds, cluster reports of one event, publish timelines.",
        epilog="exit codes: 0 done; 1 a runtime failure (database, files); "
        "2 invalid settings or arguments, every mistake listed",
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help=f"settings file (default: $AGGREGATOR_CONFIG or {DEFAULT_CONFIG})",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser("run", help="run the worker and the feed server until stopped")
    run.add_argument("--no-server", action="store_true", help="run the worker only")
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="with --no-server: serve /healthz, /readyz and /metrics on this port",
    )
    run.set_defaults(handler=cmd_run)

    serve = commands.add_parser("serve", help="serve the published feeds only, without polling")
    serve.set_defaults(handler=cmd_serve)

    db = commands.add_parser("db", help="database schema: upgrade or show its revision")
    db_actions = db.add_subparsers(title="actions", metavar="ACTION")
    db_upgrade = db_actions.add_parser("upgrade", help="migrate the schema to this version's")
    db_upgrade.set_defaults(handler=cmd_db_upgrade)
    db_current = db_actions.add_parser("current", help="print the schema's revision")
    db_current.set_defaults(handler=cmd_db_current)

    poll = commands.add_parser("poll", help="poll due sources, cluster and publish")
    poll.add_argument("--once", action="store_true", required=True, help="run one cycle and exit")
    poll.set_defaults(handler=cmd_poll)

    check = commands.add_parser(
        "check-config", help="validate a settings file, listing every mistake (exit 2 on any)"
    )
    check.add_argument("file", nargs="?", type=Path, help="the file (default: --config)")
    check.set_defaults(handler=cmd_check_config)

    sources = commands.add_parser("sources", help="list, add, remove, import or export sources")
    verbs = sources.add_subparsers(title="actions", metavar="ACTION")
    listing = verbs.add_parser("list", help="each source with its fetch status")
    listing.add_argument("--json", action="store_true", help="one JSON object per source")
    listing.set_defaults(handler=cmd_sources_list)
    add = verbs.add_parser("add", help="add a source to the settings file")
    add.add_argument("name")
    add.add_argument("url")
    add.add_argument(
        "--interval",
        help='time between polls, as in the file: seconds, or "30s", "15m", "2h", "1d"',
    )
    add.add_argument("--language", help="language code, e.g. uk, ru or pt-BR")
    add.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    add.set_defaults(handler=cmd_sources_add)
    remove = verbs.add_parser("remove", help="remove a source from the settings file")
    remove.add_argument("name")
    remove.set_defaults(handler=cmd_sources_remove)
    imp = verbs.add_parser("import", help="add the feeds of an OPML file")
    imp.add_argument("file", type=Path)
    imp.set_defaults(handler=cmd_sources_import)
    exp = verbs.add_parser("export", help="write the sources as OPML")
    exp.add_argument("file", type=Path, nargs="?", help="output file (default: stdout)")
    exp.set_defaults(handler=cmd_sources_export)

    ev = commands.add_parser("eval", help="score dedupe and clustering on a labelled file")
    ev.add_argument("file", type=Path, help="JSON Lines in the ../shared/data format")
    ev.add_argument("--pairs", action="store_true", help="the file holds labelled pairs")
    ev.add_argument("--shuffle", type=int, metavar="SEED", help="stream in a shuffled order")
    ev.add_argument(
        "--level",
        choices=["event", "storyline"],
        default="event",
        help="what the file's `cluster` labels (UCI's stories are storylines; default: event)",
    )
    ev.add_argument("--split", metavar="NAME", help="score only documents whose `split` is NAME")
    ev.add_argument("--method", choices=["tfidf", "embedding"], help="clusterer to use")
    ev.add_argument(
        "--threshold",
        help="probability from the pair model a report needs to join a story "
        "(default: cluster.threshold; 0 = the method's own)",
    )
    ev.add_argument(
        "--window-hours",
        help="hours a story stays open to new reports (default: cluster.window_hours)",
    )
    ev.add_argument(
        "--merge",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the merge pass of converging stories (default: cluster.merge_stories)",
    )
    ev.add_argument("--cache", type=Path, help="folder keeping embeddings between runs")
    ev.set_defaults(handler=cmd_eval)

    demo = commands.add_parser("demo", help="run the bundled demo's whole period, write feeds")
    demo.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder for the documents"
    )
    demo.set_defaults(handler=cmd_demo)

    pub = commands.add_parser("publish", help="write every published document to a folder")
    pub.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder for the documents"
    )
    pub.set_defaults(handler=cmd_publish)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    args.settings = settings  # for main's database error messages
    logs.configure(settings.log_level, settings.worker.log_format)
    return settings


def _open(settings: Settings) -> Store:
    """Open the store, migrating it first when worker.migrate_on_start says so."""
    from aggregator.store import open_store
    from aggregator.store.migrate import ensure_current

    migrate = settings.worker.migrate_on_start
    store = open_store(settings.resolved_database_url, create=migrate)
    if not migrate:
        try:
            ensure_current(store.engine)
        except BaseException:
            store.close()
            raise
    return store


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.file or args.config)
    print(
        f"{settings.path}: OK ({len(settings.sources)} sources, "
        f"{len(settings.timelines)} timelines)"
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from aggregator.worker import Worker

    settings = _settings(args)
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise ConfigError("--metrics-port: expected a port number from 1 to 65535")
    store = _open(settings)
    try:
        with _demo_outlets(settings):
            worker = Worker(settings, store)
            asyncio.run(worker.run(serve=not args.no_server, ops_port=args.metrics_port))
    finally:
        store.close()
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from aggregator.worker import run_feed_server

    settings = _settings(args)
    store = _open(settings)
    try:
        asyncio.run(run_feed_server(settings, store))
    finally:
        store.close()
    return EXIT_OK


def cmd_poll(args: argparse.Namespace) -> int:
    from aggregator.pipeline import Pipeline

    settings = _settings(args)
    store = _open(settings)
    try:
        with _demo_outlets(settings):
            pipeline = Pipeline(settings, store)
            try:
                report = asyncio.run(pipeline.run_cycle())
            finally:
                pipeline.close()
    finally:
        store.close()
    print(report.summary())
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from aggregator.store import open_store
    from aggregator.store.migrate import upgrade

    settings = _settings(args)
    store = open_store(settings.resolved_database_url, create=False)
    try:
        result = upgrade(store.engine)
    finally:
        store.close()
    if result.changed:
        print(f"upgraded the database schema: {result.before or 'empty'} -> {result.after}")
    else:
        print(f"the database schema is current ({result.after})")
    return EXIT_OK


def cmd_db_current(args: argparse.Namespace) -> int:
    from aggregator.store import open_store
    from aggregator.store.migrate import current_revision, head_revision

    settings = _settings(args)
    store = open_store(settings.resolved_database_url, create=False)
    try:
        current, head = current_revision(store.engine), head_revision()
    finally:
        store.close()
    state = "current" if current == head else f"behind: run `aggregator db upgrade` ({head})"
    print(f"{current or 'empty'} ({state})")
    return EXIT_OK


def cmd_sources_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = _open(settings)
    try:
        store.sync_sources(settings.sources, datetime.now(UTC))
        statuses = store.source_statuses()
    finally:
        store.close()
    if args.json:
        for status in statuses:
            print(json.dumps(dataclasses.asdict(status), default=str, ensure_ascii=False))
        return EXIT_OK
    print(f"{'NAME':24} {'STATUS':8} {'HTTP':>4} {'ERRS':>4} {'ENTRIES':>7} {'NEXT CHECK':20} URL")
    for s in statuses:
        state = s.status if s.in_config else "removed"
        next_check = s.next_check_at.strftime("%Y-%m-%d %H:%M:%S") if s.next_check_at else "-"
        print(
            f"{s.name[:24]:24} {state:8} {s.last_http_status or '-':>4} {s.error_count:>4} "
            f"{s.entries:>7} {next_check:20} {s.url}"
        )
        if s.last_error:
            print(f"{'':24} last error ({s.last_error_code}): {s.last_error}")
    return EXIT_OK


def _config_path(args: argparse.Namespace) -> Path:
    return Path(load_settings(args.config).path or DEFAULT_CONFIG)


# What each source key is called on the command line, for error messages.
_ADD_OPTIONS = {
    "name": "NAME",
    "url": "URL",
    "interval": "--interval",
    "language": "--language",
    "tags": "--tag",
}


def cmd_sources_add(args: argparse.Namespace) -> int:
    from aggregator.sourcelist import add_sources

    path = _config_path(args)
    given = {
        "name": args.name,
        "url": args.url,
        "interval": args.interval,
        "language": args.language,
        "tags": args.tag,
    }
    source = check_source(given, names=_ADD_OPTIONS)
    if not add_sources(path, [source]):
        raise ConfigError(
            f"a source named {args.name!r} or with the URL {args.url} exists already",
            file=str(path),
            key="sources",
        )
    print(f"added {args.name!r} to {path}")
    return EXIT_OK


def cmd_sources_remove(args: argparse.Namespace) -> int:
    from aggregator.sourcelist import remove_source

    path = _config_path(args)
    remove_source(path, args.name)
    print(f"removed {args.name!r} from {path}; its stored entries stay")
    return EXIT_OK


def cmd_sources_import(args: argparse.Namespace) -> int:
    from aggregator.opml import parse_opml
    from aggregator.sourcelist import add_sources

    path = _config_path(args)
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(args.file)) from exc
    found = parse_opml(data, file=str(args.file))
    added = add_sources(path, found)
    print(f"{len(added)} of {len(found)} feeds added to {path} (the rest were there already)")
    return EXIT_OK


def cmd_sources_export(args: argparse.Namespace) -> int:
    from aggregator.opml import sources_to_opml

    settings = load_settings(args.config)
    data = sources_to_opml(settings.sources, title="Aggregator sources")
    if args.file:
        args.file.write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    return EXIT_OK


_EVAL_OPTIONS = {
    "method": "--method",
    "threshold": "--threshold",
    "window_hours": "--window-hours",
    "merge_stories": "--merge",
}


def cmd_eval(args: argparse.Namespace) -> int:
    from aggregator_eval.evaluate import evaluate_file, evaluate_pairs

    overrides = {
        "method": args.method,
        "threshold": args.threshold,
        "window_hours": args.window_hours,
        "merge_stories": args.merge,
    }
    # held to the file's checks: --threshold nan is refused as `threshold = nan` is
    cluster = with_values(_cluster_settings(args), overrides, names=_EVAL_OPTIONS)
    if args.pairs:
        result = evaluate_pairs(args.file, cluster, cache=args.cache)
    else:
        result = evaluate_file(
            args.file,
            cluster,
            level=args.level,
            split=args.split,
            shuffle_seed=args.shuffle,
            cache=args.cache,
            merge=cluster.merge_stories,
        )
    print(json.dumps(result, ensure_ascii=False))
    return EXIT_OK


def _cluster_settings(args: argparse.Namespace) -> ClusterSettings:
    """eval works without a settings file: the defaults are what it measures then."""
    if args.config is None and not DEFAULT_CONFIG.exists():
        return ClusterSettings()
    return load_settings(args.config).cluster


def cmd_publish(args: argparse.Namespace) -> int:
    from aggregator.pipeline import Pipeline
    from aggregator.publish.documents import write_documents

    settings = _settings(args)
    store = _open(settings)
    try:
        pipeline = Pipeline(settings, store)
        try:
            # Renders everything unless a running worker leads: then its documents stand.
            pipeline.publish(full=True)
        finally:
            pipeline.close()  # hand the leader lease straight back
        written = write_documents(store.documents(), args.out)
    finally:
        store.close()
    print(f"wrote {len(written)} documents to {args.out}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from aggregator.demo.simulate import run_demo

    settings = _settings(args)
    with tempfile.TemporaryDirectory(prefix="aggregator-demo-") as tmp:
        written, report = run_demo(settings, Path(tmp) / "demo.db", args.out)
    print(f"{report}; wrote {len(written)} documents to {args.out}")
    return EXIT_OK


def _demo_outlets(settings: Settings) -> contextlib.AbstractContextManager[object]:
    """Serve the bundled demo outlets while running, when the settings ask for it."""
    if not settings.demo.enabled:
        return contextlib.nullcontext()
    from aggregator.demo.simulate import live_demo_server

    return live_demo_server(settings.demo)
