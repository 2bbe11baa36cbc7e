"""The command line (SPEC 6): exit 0 on success, 1 when some inputs failed, 2 for usage errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from tqdm import tqdm

from hotfolder import __version__, engine, memory
from hotfolder.config import Config, LimitsConfig, config_path, load_config
from hotfolder.engine import Output
from hotfolder.errors import ConfigError, HotfolderError, RecipeError, Unavailable
from hotfolder.files import write_atomic
from hotfolder.names import shown
from hotfolder.ops import REGISTRY
from hotfolder.recipes import (
    Plan,
    RecipeBook,
    combine,
    inbox_folders,
    load_recipe,
    parse_chain,
    recipe_schema,
)
from hotfolder.sinks.local import OutboxSink

OK, FAILED, USAGE = 0, 1, 2


def examples() -> Path:
    """The example configuration and recipes: the repository's config/, or its installed copy."""
    for folder in (Path(__file__).resolve().parents[2] / "config",
                   Path(sys.prefix) / "share" / "hotfolder" / "config"):
        if (folder / "hotfolder.yaml").is_file():
            return folder
    raise ConfigError("the example configuration is missing from this installation of hotfolder")


# --- init ------------------------------------------------------------------------------

FOLDERS = ("inbox", "outbox", "failed", "quarantine", "archive", "state", "recipes")


def cmd_init(args: argparse.Namespace) -> int:
    """Create a hot-folder root with a commented configuration and example recipes."""
    root = Path(args.root).resolve()
    for name in FOLDERS:
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "quarantine").chmod(0o700)
    config = root / "hotfolder.yaml"
    wrote = _copy_new(examples() / "hotfolder.yaml", config)
    recipes = sorted((examples() / "recipes").glob("*.yaml"))
    for recipe in recipes:
        _copy_new(recipe, root / "recipes" / recipe.name)
        (root / "inbox" / recipe.stem).mkdir(exist_ok=True)
    names = [recipe.stem for recipe in recipes]
    first = names[0] if "engrave-wood" not in names else "engrave-wood"
    print(f"hot-folder root ready in {root}")
    print(f"  hotfolder.yaml  configuration{'' if wrote else ' (existing one left unchanged)'}")
    print(f"  recipes/        example recipes: {', '.join(names)}")
    print(f"  inbox/          drop files here; inbox/{first}/ uses recipes/{first}.yaml")
    print("next steps:")
    print(f"  1. review {config} (virus scanner, S3, limits)")
    print(f"  2. hotfolder check -c {config}")
    print(f"  3. hotfolder run -c {config}")
    print(f"  4. copy a photo into {root / 'inbox' / first}/ and find the result in"
          f" {root / 'outbox' / first}/")
    print(f"  or without the service: hotfolder process PHOTO.jpg -c {config} -r {first} -o OUT/")
    return OK


def _copy_new(source: Path, target: Path) -> bool:
    """Copy `source` to `target` unless it exists; True when written."""
    if target.exists():
        return False
    write_atomic(target, source.read_bytes())
    return True


# --- process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """What every file of a `process` run gets: the plan, the limits and the memory cap."""

    plan: Plan
    limits: LimitsConfig
    memory_limit: int


class Rendering(NamedTuple):
    """One input rendered: the files to write, or the reason it failed."""

    source: Path
    files: list[Output]
    error: str | None


_batch: Batch | None = None


def _start_worker(batch: Batch) -> None:
    global _batch  # noqa: PLW0603  (set once per worker process, read by _render_in_worker)
    _batch = batch


def _render_in_worker(source: Path) -> Rendering:
    assert _batch is not None
    return render_file(source, _batch)


def render_file(source: Path, batch: Batch) -> Rendering:
    """Render one file into its outputs (and sidecar); never raises for a bad file."""
    if not source.is_file():
        reason = "is not a regular file" if source.exists() else "does not exist"
        return Rendering(source, [], reason)
    try:
        with memory.capped(batch.memory_limit):
            rendered = engine.render(source.read_bytes(), source.name, batch.plan, batch.limits)
    except HotfolderError as exc:
        return Rendering(source, [], exc.message)
    except OSError as exc:
        return Rendering(source, [], f"cannot be read ({exc.strerror or exc})")
    except MemoryError:
        return Rendering(source, [], "there was not enough memory to process it")
    except Exception as exc:  # noqa: BLE001  (one file's crash must not end the batch)
        return Rendering(source, [], f"failed unexpectedly ({type(exc).__name__}: {exc})")
    files = list(rendered.outputs)
    if batch.plan.sidecar:
        files.append(engine.sidecar_output(rendered.sidecar, beside=rendered.main.name))
    return Rendering(source, files, None)


def write_outputs(rendering: Rendering, outbox: OutboxSink, made: dict[str, Path]) -> str | None:
    """Deliver a rendering's files into the outbox folder, replacing older ones; else the reason.

    `made` maps the names already written in this run to their inputs, so that two
    inputs never silently replace each other's output.
    """
    for output in rendering.files:
        target = outbox.root / output.name
        if output.name in made:
            return (f"its output {output.name} was already made from {made[output.name]} in"
                    " this run; put {sha8} in the output name or process them separately")
        if target.exists() and target.samefile(rendering.source):
            return "the output would overwrite the input; choose another output folder with -o"
    for output in rendering.files:
        try:
            outbox.deliver(PurePosixPath(output.name), output.data, media_type=output.media_type,
                           metadata={}, on_conflict="overwrite")
        except HotfolderError as exc:
            return exc.message
        except OSError as exc:
            return f"cannot write {outbox.root / output.name} ({exc.strerror or exc})"
        made[output.name] = rendering.source
    return None


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """The files named, with the visible files of any folder named (not recursive)."""
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir()
                                if p.is_file() and not p.name.startswith(".")))
        else:
            files.append(path)
    return files


def render_all(files: list[Path], batch: Batch, jobs: int) -> Iterator[Rendering]:
    """Renderings of `files` as they finish; in parallel processes when worth it."""
    jobs = max(1, min(jobs, len(files)))
    if jobs == 1:
        yield from (render_file(f, batch) for f in files)
        return
    with ProcessPoolExecutor(jobs, mp_context=get_context("fork"), initializer=_start_worker,
                             initargs=(batch,)) as pool:
        futures = [pool.submit(_render_in_worker, f) for f in files]
        for future in as_completed(futures):
            yield future.result()


def cmd_process(args: argparse.Namespace) -> int:
    """Process files once with a recipe or steps, without the service."""
    plan, limits = _plan_and_limits(args)
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    files = expand_inputs(args.inputs)
    if not files:
        raise RecipeError("no input files (the folders named are empty)")
    failed = 0
    outbox = OutboxSink(outdir)
    made: dict[str, Path] = {}
    tqdm.monitor_interval = 0  # no monitor thread: worker processes are forked
    bar = tqdm(total=len(files), unit="file", file=sys.stderr, leave=False, dynamic_ncols=True,
               disable=None if len(files) > 1 else True)  # None: shown on a terminal only
    with bar:
        workers = max(1, min(args.jobs, len(files)))
        batch = Batch(plan, limits, limits.worker_memory_bytes(workers))
        for rendering in render_all(files, batch, workers):
            bar.update()
            error = rendering.error or write_outputs(rendering, outbox, made)
            if error:
                failed += 1
                bar.write(f"{rendering.source}: {error}", file=sys.stderr)
            else:
                written = ", ".join(str(outdir / output.name) for output in rendering.files)
                bar.write(f"{rendering.source} -> {written}", file=sys.stdout)
    if len(files) > 1:
        print(f"{len(files) - failed} of {len(files)} files processed"
              + (f", {failed} failed" if failed else ""), file=sys.stderr)
    return FAILED if failed else OK


def _plan_and_limits(args: argparse.Namespace) -> tuple[Plan, LimitsConfig]:
    """The plan from -r or -s, and the limits of the configuration when there is one."""
    config = _optional_config(args.config)
    if args.steps is not None:
        try:
            recipe = parse_chain(args.steps)
        except RecipeError as exc:
            raise RecipeError(f"-s {args.steps!r}: {exc.message}") from None
        plan = combine([("steps", "-s", recipe)])
    else:
        recipes = config.layout.recipes if config else examples() / "recipes"
        plan = RecipeBook(recipes).get(args.recipe)
    return plan, config.limits if config else LimitsConfig()


def _optional_config(explicit: str | None) -> Config | None:
    """The configuration given or found in the usual places; None when there is none."""
    path = config_path(explicit)
    if explicit or path.is_file():
        return load_config(path)
    return None


# --- check -----------------------------------------------------------------------------


class Finding(NamedTuple):
    """One line of `hotfolder check`: good or not, and what was found."""

    ok: bool
    text: str


Check = Callable[[Config], Iterable[tuple[bool, str]]]


def check_recipes(config: Config) -> Iterator[Finding]:
    """Every named recipe loads."""
    folder = config.layout.recipes
    if not folder.is_dir():
        yield Finding(False, f"recipes folder {folder} does not exist")
        return
    for path in sorted(folder.glob("*.yaml")):
        try:
            recipe = load_recipe(path)
        except RecipeError as exc:
            yield Finding(False, exc.message)
        else:
            fmt = recipe.output.format or "same format"
            yield Finding(True, f"recipe {path.stem}: {len(recipe.steps)} steps -> {fmt}")


def check_inbox(config: Config) -> Iterator[Finding]:
    """The pipeline each inbox folder gives its files (SPEC 3)."""
    from hotfolder.parts import build_book

    layout = config.layout
    if not layout.inbox.is_dir():
        yield Finding(False, f"inbox folder {layout.inbox} does not exist (hotfolder init creates"
                      " it)")
        return
    inline = config.recipes.inline_allowed
    yield Finding(True, "inline folder names: " + ("allowed" if inline else "turned off")
                  + f" (recipes.inline: {config.recipes.inline})")
    book = build_book(config)
    folders = [layout.inbox, *inbox_folders(layout.inbox, layout.work)]
    for folder in folders:
        label = folder.relative_to(layout.root) if folder.is_relative_to(layout.root) else folder
        try:
            plan = book.resolve(layout.inbox, folder / "file")
        except RecipeError as exc:
            yield Finding(False, f"{label}/: {exc.message}")
            continue
        yield Finding(True, f"{label}/: {describe_plan(plan)}")


def describe_plan(plan: Plan) -> str:
    """A plan on one line: `auto_orient, resize(width=1200) -> png 300 dpi`."""
    if not plan.steps and plan.name == "none":
        return "delivered unchanged (no recipe)"
    steps = ", ".join(step.summary() for step in plan.steps) or "no steps"
    out = plan.output
    fmt = out.format or "same format"
    dpi = f" {out.dpi:g} dpi" if out.dpi else ""
    return f"{steps} -> {fmt}{dpi} [{' + '.join(plan.sources)}]"


def check_s3(config: Config) -> Iterator[Finding]:
    """The bucket of `output.s3` can be written (SPEC 6: tries S3)."""
    s3 = config.output.s3
    if s3 is not None:
        from hotfolder.sinks.s3 import check_bucket

        problem = check_bucket(s3)
        where = f"s3://{s3.bucket}/{s3.prefix.strip('/')}"
        yield Finding(problem is None, f"{where}: {problem or 'reachable and takes writes'}")


def check_scanner(config: Config) -> Iterator[Finding]:
    """clamd answers and finds a test virus at the end of a file of the largest accepted size."""
    from hotfolder.parts import build_scanner

    scanner = build_scanner(config)
    if scanner is None:
        return
    try:
        problem = scanner.check_limits()
    except Unavailable as exc:
        problem = exc.message
    yield Finding(problem is None, problem or (
        f"clamd at {config.scanner.clamd} answers and finds a test virus at the end of a file of"
        f" {config.limits.max_file_mb:g} MB (limits.max_file_mb)"))


def check_queue(config: Config) -> Iterator[Finding]:
    """A Redis queue answers (workers on other machines share it)."""
    from hotfolder.journal import is_shared

    url = config.queue.url
    if is_shared(url):
        from hotfolder.journal.redis import check_redis

        problem = check_redis(url)
        yield Finding(problem is None, problem or f"queue {url}: Redis answers")


def check_state(config: Config) -> Iterator[Finding]:
    """The state folder is on a local disk (SPEC 6: its SQLite databases need one)."""
    from hotfolder.watcher import state_folder_problem

    problem = state_folder_problem(config.layout.state)
    yield Finding(problem is None, problem or f"{config.layout.state}: the state folder is on a"
                  " local disk")


def check_work(config: Config) -> Iterator[Finding]:
    """The work folder is on the inbox's filesystem (SPEC 2: a claim is one rename)."""
    from hotfolder.parts import work_folder_problem

    problem = work_folder_problem(config.layout)
    yield Finding(problem is None, problem or f"{config.layout.work}: the work folder is on the"
                  " inbox's filesystem")


# Checks run by `hotfolder check`, in order; each yields (ok, text) pairs.
CHECKS: list[Check] = [check_recipes, check_inbox, check_scanner, check_s3, check_queue,
                       check_state, check_work]


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the configuration and recipes and show what each inbox folder does."""
    path = config_path(args.config)
    config = load_config(path)
    print(f"ok    configuration {path}")
    bad = 0
    for check in CHECKS:
        for ok, text in check(config):
            bad += not ok
            print(f"{'ok  ' if ok else 'FAIL'}  {shown(text)}")
    if bad:
        print(f"{bad} problem(s) found", file=sys.stderr)
    return USAGE if bad else OK


# --- ops and schema --------------------------------------------------------------------


OUTPUT_RULE = (
    "Output settings: a step that sets one (format, jpeg=85, optimize, dpi) wins over the"
    " recipe's output: section, and optimize changes only the settings it is given."
)


def cmd_ops(args: argparse.Namespace) -> int:
    """List the operations with their parameters and inline forms."""
    for name, op in sorted(REGISTRY.items()):
        print(f"{name}: {op.summary}")
        print(f"    inline: {op.inline_form}")
        schema = op.params.model_json_schema()
        fields = schema.get("properties", {})
        for field, spec in fields.items():
            default = f" = {json.dumps(spec['default'])}" if "default" in spec else ""
            doc = f"  {spec['description']}" if "description" in spec else ""
            print(f"    {field}: {_type_of(spec, schema)}{default}{doc}")
        if len(fields) > 1 and not schema.get("required"):
            print(f"    one parameter alone: {one_parameter(name, op.positional, list(fields))}")
        print()
    print(OUTPUT_RULE)
    return OK


def one_parameter(name: str, positional: bool, fields: list[str]) -> str:
    """How to set only the last parameter of an operation, in a recipe and inline."""
    last = fields[-1]
    mapping = f"- {name}: {{{last}: {last.upper()}}}"
    if not positional:
        return mapping
    commas = "," * (len(fields) - 1)
    return f"{name}={commas}{last.upper()} (empty places keep their defaults), or {mapping}"


def _type_of(spec: dict[str, Any], schema: dict[str, Any]) -> str:
    """A short type for a JSON Schema property: `int`, `fit|fill`, `number|null`."""
    if "$ref" in spec:
        ref = schema.get("$defs", {}).get(spec["$ref"].rsplit("/", 1)[-1], {})
        return _type_of(ref, schema) if ref else "object"
    if "enum" in spec:
        return "|".join(str(v) for v in spec["enum"])
    if "const" in spec:
        return str(spec["const"])
    if "anyOf" in spec:
        return "|".join(dict.fromkeys(_type_of(s, schema) for s in spec["anyOf"]))
    kind = spec.get("type", "any")
    if kind == "array" and "prefixItems" in spec:
        return f"[{', '.join(_type_of(item, schema) for item in spec['prefixItems'])}]"
    if kind == "array":
        return f"list[{_type_of(spec.get('items', {}), schema)}]"
    return str(kind)


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of recipe files."""
    print(json.dumps(recipe_schema(), indent=2))
    return OK


# --- the service: run, worker, status, retry ------------------------------------------
# These commands import the service's modules themselves: without huey, boto3 and redis,
# `process`, `ops` and `schema` start about 0.4 s sooner.


def cmd_run(args: argparse.Namespace) -> int:
    """Run the service in the foreground: watcher, workers, metrics (systemd Type=notify).

    clamd reads the scanner's limits probe while the service's modules load."""
    from hotfolder.scanner import make_scanner

    cfg = load_config(args.config)
    scanner = make_scanner(cfg.scanner, cfg.limits.max_file_bytes)
    if scanner is not None:
        scanner.probe_ahead()
    from hotfolder import service  # its modules load while clamd reads the probe

    service.setup_logging()
    return service.run(cfg, scanner=scanner)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run workers only, taking jobs from the shared queue."""
    from hotfolder import service

    service.setup_logging()
    return service.run(load_config(args.config), watch=False)


def cmd_status(args: argparse.Namespace) -> int:
    """Show the queue depth, jobs by state and the latest failures."""
    from hotfolder import admin

    report = admin.status(load_config(args.config))
    if args.json:
        print(json.dumps(report, indent=2))
        return OK
    jobs = report["jobs"]
    print(f"queue depth: {report['queue_depth']}")
    print("jobs: " + (", ".join(f"{state} {n}" for state, n in sorted(jobs.items())) or "none"))
    if report["waiting"]:
        print("waiting for: " + ", ".join(f"{why} {n}" for why, n in report["waiting"].items()))
    watcher = report["watcher"]
    if watcher["unwatched_folders"]:
        print(f"not watched: {watcher['unwatched_folders']} inbox folder(s), most likely because"
              f" the inotify watches ran out (fs.inotify.max_user_watches ="
              f" {watcher['max_user_watches']}); the rescan finds their files, up to"
              f" {watcher['rescan_seconds']:g} s late")
    if report["recent_failures"]:
        print("recent failures:")
        for failure in report["recent_failures"]:
            print(f"  {failure['time']}  {failure['reason']}")
    return OK


def cmd_retry(args: argparse.Namespace) -> int:
    """Move failed files back into their inbox folder (and remove their error reports)."""
    if bool(args.paths) == args.all:
        raise ConfigError("give the failed files to retry, or --all")
    from hotfolder import admin

    moved, problems = admin.retry(load_config(args.config), args.paths)
    for rel, target in moved:
        print(shown(f"{rel} -> {target}"))
    for line in problems:
        print(f"hotfolder: {shown(line)}", file=sys.stderr)
    if not moved and not problems:
        print("nothing in failed/ to retry")
    return FAILED if problems else OK


def cmd_cache(args: argparse.Namespace) -> int:
    """Show or clear the cache of results used for duplicate detection."""
    from hotfolder.cache import stored_results

    config = load_config(args.config)
    cache = stored_results(config.cache, config.layout.state)
    if args.action == "clear":
        count, size = cache.clear()
        print(f"removed {count} cached results ({size / 2**20:.1f} MB) from {cache.folder}")
    else:
        count, size = cache.usage()
        state = "on" if config.cache.enabled else "off"
        print(f"{count} cached results, {size / 2**20:.1f} MB of {config.cache.max_mb:g} MB"
              f" (duplicate detection {state})")
    return OK


# --- entry point -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command."""
    parser = argparse.ArgumentParser(
        prog="hotfolder", description="Hot-folder image processing for engraving and print.")
    parser.add_argument("--version", action="version", version=f"hotfolder {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        doc = (func.__doc__ or "").strip()
        cmd = sub.add_parser(name, help=doc, description=doc)
        cmd.set_defaults(func=func)
        return cmd

    def config_option(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("-c", "--config", help="configuration file (default: $HOTFOLDER_CONFIG,"
                         " then /etc/hotfolder/hotfolder.yaml)")

    init = command("init", cmd_init)
    init.add_argument("root", help="folder to create the hot-folder root in")

    process = command("process", cmd_process)
    process.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders")
    how = process.add_mutually_exclusive_group(required=True)
    how.add_argument("-r", "--recipe", help="recipe name (from the configuration's recipes/, or"
                     " the examples without one) or path to a recipe file")
    how.add_argument("-s", "--steps", help="inline steps, e.g. 'resize=800x600,fill+grayscale+png'")
    process.add_argument("-o", "--output", default=".", help="output folder (default: here)")
    process.add_argument("-j", "--jobs", type=int, default=len(os.sched_getaffinity(0)),
                         help="parallel processes (default: one per CPU core)")
    config_option(process)

    check = command("check", cmd_check)
    config_option(check)

    command("ops", cmd_ops).epilog = OUTPUT_RULE
    command("schema", cmd_schema)

    for name, func in (("run", cmd_run), ("worker", cmd_worker)):
        config_option(command(name, func))
    status = command("status", cmd_status)
    config_option(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    retry = command("retry", cmd_retry)
    config_option(retry)
    retry.add_argument("paths", nargs="*", metavar="PATH", help="files in failed/ to retry")
    retry.add_argument("--all", action="store_true", help="retry every file in failed/")
    cache = command("cache", cmd_cache)
    config_option(cache)
    cache.add_argument("action", nargs="?", choices=("show", "clear"), default="show",
                       help="show the cache's size (default) or clear it")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, so that a reader gone away is found while it can be handled
        return code
    except (ConfigError, RecipeError) as exc:
        print(f"hotfolder: {exc.message}", file=sys.stderr)
        return USAGE
    except HotfolderError as exc:
        print(f"hotfolder: {exc.message}", file=sys.stderr)
        return FAILED
    except BrokenPipeError:  # the reader went away (`hotfolder check | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return FAILED
    except OSError as exc:  # a folder that cannot be made, a file that cannot be read...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"hotfolder: {where}{exc.strerror or exc}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
