"""The ``platform`` command line.

Exit codes: 0 success, 2 bad input (study file, cohort, arguments), 1 failure (a bug or the
environment). Logging is configured here and nowhere else.

Everything a user typed or named (study names, paths, URIs, parameter names and values, run
names) is printed through :func:`_esc` or as :class:`~rich.text.Text`, never as Rich markup: a
folder named ``runs[old]`` prints as ``runs[old]``, ``[link=...]`` is not a link, ``[/]`` does
not raise. Numeric arguments are range-checked by argparse (exit 2 naming the argument), and
output paths are checked writable before any work starts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from salient.platform.console import quiet_known_noise
from salient.platform.errors import PlatformError, clip
from salient.platform.outputs import new_output_problem, output_dir_owner_problem

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
#: Most characters of an error message printed (the message may quote a user's value).
MAX_ERROR_CHARS = 20_000
#: Most synthetic subjects one ``platform synth`` writes (each is a full CT volume); the same
#: bound as ``salient.platform.synth.MAX_SYNTH_MASKS``, not imported to keep the CLI start fast.
MAX_SYNTH_MASKS = 10_000
#: Largest ``tune-guidance --trials`` (configurations searched).
MAX_TUNING_TRIALS = 100_000
log = logging.getLogger("salient.platform")


def _esc(value: object) -> str:
    """A user's string, safe to embed in Rich markup (printed exactly as typed)."""
    return escape(str(value))


#: a number type ``_in_range`` parses
N = TypeVar("N", int, float)


def _in_range(convert: Callable[[str], N], noun: str, low: N, high: N, bounds: str) -> Callable[[str], N]:
    """argparse ``type=``: a ``noun`` (``convert``-ed) in ``[low, high]``; anything else (NaN
    included) is a usage error (exit 2) that names the argument and the value."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {noun}, got {clip(text)!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {bounds}, got {clip(text)}")
        return value

    parse.__name__ = noun  # argparse names the type in some messages
    return parse


def _int_in(low: int, high: int) -> Callable[[str], int]:
    return _in_range(int, "whole number", low, high, f"[{low}, {high}]")


def _float_in(low: float, high: float) -> Callable[[str], float]:
    return _in_range(float, "number", low, high, f"[{low:g}, {high:g}]")


def _mlflow_ui(text: str) -> str:
    """argparse ``type=``: the MLflow UI's address (``http(s)://host:port``), a usage error otherwise."""
    from salient.dashboards.links import normalise_ui_url

    try:
        return normalise_ui_url(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be http(s)://HOST[:PORT][/PATH], got {clip(text)!r}") from None


_MLFLOW_UI_HELP = (
    "address of a running MLflow UI over the same store, e.g. http://127.0.0.1:5000: clicking a point opens its "
    "run there (without it the run id is shown to copy)"
)


def _check_output_file(path: str, what: str) -> None:
    """Refuse an output file that cannot be written, before the command does any work."""
    if (problem := new_output_problem(Path(path), what, folder=False)) is not None:
        raise PlatformError(problem)


def _print_plan(console: Console, study_path: str) -> int:
    from salient.platform.study import build_plan, load_study

    study = load_study(study_path)
    plan = build_plan(study)
    if study.kind == "dose_response":  # what `run` refuses from the file alone
        from salient.platform.pipeline import check_runnable

        check_runnable(study, plan)
    if (problem := output_dir_owner_problem(study.output_dir)) is not None:  # what `run` would refuse
        raise PlatformError(f"{study_path}: {problem}")
    console.print(f"[bold]study[/] {_esc(study.name)}  ({_esc(study_path)})")
    console.print(f"cohort: {_esc(study.cohort.describe())}")
    console.print(
        f"stage preset: {study.stages.preset}; sampler: {study.sampler.name}"
        + (f" ({plan.n_samples} draws per cell, seed {study.sampler.seed})" if plan.sampled else "")
    )
    table = Table(title="trial plan (grid cells x repeats)")
    names = sorted({k for t in plan.trials for k in t.params})
    for col in ["trial", "repeat", *names]:
        table.add_column(Text(col))
    for t in plan.trials:
        table.add_row(Text(t.trial_id), str(t.repeat), *[Text(str(t.params.get(n, "-"))) for n in names])
    console.print(table)
    if plan.sampled:
        console.print(
            "sampled by "
            + study.sampler.name
            + ": "
            + ", ".join(_esc(f"{n} ~ {s.kind}{list(s.candidate_values())}") for n, s in plan.sampled.items())
        )
    if study.kind == "guidance_tuning":
        t = study.tuning
        console.print(
            f"[bold]{study.sampler.n_trials} guidance configurations[/] (platform tune-guidance), each scored on "
            f"{t.first_rung_slices} held-out lesion slices first and, if in the better half, on {t.eval_slices}"
        )
        return EXIT_OK
    console.print(f"prevalences (evaluation only): {list(plan.prevalences)}")
    console.print(
        f"[bold]{plan.n_trials} trials[/] = detector trainings; {plan.n_generators} generator pool(s); "
        f"{plan.n_evaluations} evaluations"
    )
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace, console: Console) -> int:
    return _print_plan(console, args.study)


def _cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from salient.platform.plan_report import print_plan_estimate

    return print_plan_estimate(console, args.study, args.workers, args.gpu_hours_per_stage)


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from salient.platform.pipeline import TrackingUnavailableError, run_study

    try:
        result = run_study(
            args.study, tracking_uri=args.tracking_uri, address=args.address, resume=args.resume, console=console
        )
    except TrackingUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if result.failed:
        print(
            f"{len(result.failed)} trial(s) failed after their retries: "
            + "; ".join(result.failed)
            + "\nrerun the same command to retry them; finished trials are kept",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    console.print(f"done: MLflow run {_esc(result.parent_run_id)} at {_esc(result.tracking_uri)}")
    return EXIT_OK


def _cmd_status(args: argparse.Namespace, console: Console) -> int:
    from salient.platform.pipeline import study_status

    return study_status(args.study, args.tracking_uri, console)


def _cmd_synth(args: argparse.Namespace, console: Console) -> int:
    from salient.platform.synth import resolve_generator, synthesize_cohort, synthesize_nnunet

    nnunet = args.format == "nnunet"
    if nnunet and args.dataset_id is None:
        raise PlatformError("--format nnunet needs --dataset-id N (1 to 999; the dataset becomes DatasetNNN_NAME)")
    if not nnunet:
        given = [o for o, v in (("--dataset-id", args.dataset_id), ("--dataset-name", args.dataset_name)) if v]
        given += ["--include-real"] if args.include_real else []
        if given:
            raise PlatformError(f"{', '.join(given)} apply to --format nnunet only")
    cohort = Path(args.cohort) if args.cohort else None
    if cohort is not None and not cohort.exists():
        raise PlatformError(f"--cohort {cohort}: no such file or folder")
    out = Path(args.out_dir)
    if (problem := new_output_problem(out, "OUT_ROOT" if nnunet else "OUT_DIR", folder=True)) is not None:
        raise PlatformError(problem)
    source = resolve_generator(args.generator, args.tracking_uri)
    console.print(f"generator: {_esc(source.entry)}")
    labels = {"lesion_label": _label_or_name(args.lesion_label), "channel": _label_or_name(args.channel)}
    labels["min_pair_dice"] = args.min_pair_dice
    if nnunet:
        done = synthesize_nnunet(
            source,
            args.masks,
            out,
            args.dataset_id,
            args.dataset_name or "SalientSynthetic",
            seed=args.seed,
            cohort=cohort,
            include_real=args.include_real,
            progress=True,
            **labels,
        )
        counts = done.counts
    else:
        manifest, counts = synthesize_cohort(
            source, args.masks, out, seed=args.seed, cohort=cohort, progress=True, **labels
        )
    written = counts.written
    check = f"pair Dice >= {counts.min_pair_dice:g}" if counts.min_pair_dice > 0 else "no pair check"
    console.print(f"drew {counts.drawn} lesions, kept {written} ({check})")
    if (shortfall := counts.shortfall()) is not None:
        console.print(f"[yellow]{_esc(shortfall)}[/]")
    if nnunet:
        real = f" + {done.n_real} real (REAL_*)" if done.n_real else ""
        console.print(f"wrote {written} synthetic (SYN_*){real} cases -> {_esc(done.path)}")
        console.print(f"nnU-Net: nnUNet_raw={_esc(out.resolve())} nnUNetv2_plan_and_preprocess -d {args.dataset_id}")
    else:
        console.print(f"wrote {written} synthetic CT + mask pairs -> {_esc(manifest)}")
    return EXIT_OK


def _cmd_register_generator(args: argparse.Namespace, console: Console) -> int:
    import os

    from mlflow.tracking import MlflowClient
    from salient.platform.generator_lookup import RUN_ID
    from salient.platform.generator_registry import register_generator
    from salient.platform.synth import resolve_generator

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise PlatformError("register-generator needs --tracking-uri (or MLFLOW_TRACKING_URI): the registry's store")
    if args.generator.startswith("models:/"):
        raise PlatformError(f"--generator {args.generator} is registered already; name its run id or pool folder")
    source = resolve_generator(args.generator, uri)
    run_id = args.generator if RUN_ID.match(args.generator) and not Path(args.generator).exists() else None
    version = register_generator(
        MlflowClient(tracking_uri=uri, registry_uri=uri),
        run_id,
        source,
        args.name,
        raw_subject_ids=args.log_subject_ids,
        alias=args.alias,
    )
    console.print(f"registered {_esc(source.entry)} as models:/{_esc(args.name)}/{version} at {_esc(uri)}")
    if args.alias:
        console.print(f"alias: models:/{_esc(args.name)}@{_esc(args.alias)} -> version {version}")
    return EXIT_OK


def _default_tracking_uri(given: str | None) -> str:
    import os

    if given:
        return given
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    demo = Path("salient_runs") / "mlflow.db"
    if demo.is_file():
        return f"sqlite:///{demo.resolve()}"
    raise PlatformError(
        "no tracking store: give --tracking-uri (e.g. sqlite:///OUTPUT_DIR/mlflow.db or http://127.0.0.1:5000), "
        "set MLFLOW_TRACKING_URI, or run from the folder holding salient_runs/"
    )


def _cmd_dashboard(args: argparse.Namespace, console: Console) -> int:
    from salient.dashboards.app import create_app, serve
    from salient.platform.results import MlflowResults
    from salient.platform.tracking import store_exists

    uri = _default_tracking_uri(args.tracking_uri)
    if not store_exists(uri):  # browsing must not create an empty store where the user mistyped
        raise PlatformError(f"tracking URI {uri}: no MLflow store there (nothing to show)")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can read every study", args.host)
    console.print(f"dashboard for {_esc(uri)} at http://{_esc(args.host)}:{args.port}/ (Ctrl-C stops it)")
    serve(create_app(MlflowResults(uri), mlflow_ui=args.mlflow_ui), host=args.host, port=args.port)
    return EXIT_OK


def _study_view(path: str, tracking_uri: str | None, mlflow_ui: str | None) -> tuple[Any, Any, str, Any, Any]:
    """(study, its MLflow results source, study run id, results, view) of a study that has run."""
    from salient.dashboards.app import preview_for
    from salient.dashboards.views import build_view
    from salient.platform.pipeline import find_study, other_version_note
    from salient.platform.results import MlflowResults

    study, tracker, parent = find_study(path, tracking_uri)
    if parent is None:
        raise PlatformError(f"{path}: study {study.name} has no run at {tracker.uri}; run it first")
    run_id = parent.info.run_id
    source = MlflowResults(tracker.uri)
    results = source.results(run_id)
    view = build_view(
        results,
        source.study_params(run_id),
        preview_for(source, results),
        source.scores(results),
        source.histories(results),
        mlflow_ui,
    )
    if (note := other_version_note(study, parent)) is not None:
        view.notes.insert(0, note)
    return study, source, run_id, results, view


def _add_comparison(view: Any, study_name: str, others: list[str], args: argparse.Namespace) -> None:
    """Overlay the dose curves and validation gains of ``others`` (study files) on this study's."""
    from salient.dashboards.compare import CompareInput, compare_dose_response, compare_gains

    inputs = {study_name: CompareInput(view.results, view.findings, view.links)}
    for path in others:
        other, _, _, _, other_view = _study_view(path, args.tracking_uri, args.mlflow_ui)
        if other.name in inputs:
            raise PlatformError(f"--compare {path}: study name {other.name!r} is already in the report")
        if other_view.results.empty or "dose-response" not in other_view.figures:
            raise PlatformError(f"--compare {path}: study {other.name} has no dose-response curves to compare")
        inputs[other.name] = CompareInput(other_view.results, other_view.findings, other_view.links)
    # Comparison first: a report asked to compare is read for that comparison.
    view.figures = {
        "compare-dose-response": compare_dose_response(inputs),
        "compare-gain": compare_gains(inputs),
        **view.figures,
    }
    view.notes.append(f"Compared with: {', '.join(list(inputs)[1:])} (same axes, one colour per study).")


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    from salient.dashboards.report import render_report

    _check_output_file(args.output, "-o")
    study, source, run_id, results, view = _study_view(args.study, args.tracking_uri, args.mlflow_ui)
    uri = source.uri
    if args.compare:
        _add_comparison(view, study.name, args.compare, args)
    meta = {"study": study.name, "study file": args.study, "MLflow run": run_id, "tracking URI": uri}
    meta["finished trials"] = str(len(results))
    if progress := source.state(run_id).describe():
        meta["progress"] = progress
    if args.mlflow_ui:
        meta["MLflow UI"] = args.mlflow_ui
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render_report(view, f"SALIENT study {study.name}", meta), encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a report
    console.print(f"wrote {_esc(out)} ({len(view.figures)} figures, {len(view.tables)} tables, {len(results)} trials)")
    return EXIT_OK


def _cmd_tune_guidance(args: argparse.Namespace, console: Console) -> int:
    from salient.platform.guidance_tuning import run_guidance_tuning

    _check_output_file(args.output, "-o")  # before the search: a result that cannot be saved is lost
    result = run_guidance_tuning(
        args.study,
        args.output,
        cohort_path=args.cohort,
        generator=args.generator,
        n_trials=args.trials,
        tracking_uri=args.tracking_uri,
        address=args.address,
        console=console,
        for_study=args.for_study,
    )
    table = Table(title="guidance: default vs chosen (held-out slices)")
    for col in ("", "default", "chosen"):
        table.add_column(col)
    d, c = result.default, result.chosen
    for name, fmt in (
        ("score", "{:.4f}"),
        ("mask_dice", "{:.3f}"),
        ("frechet_distance", "{:.4g}"),
        ("band_energy_distance", "{:.4g}"),
        ("nfe", "{:.0f}"),
    ):
        table.add_row(name, fmt.format(d["objectives"][name]), fmt.format(c["objectives"][name]))
    for name in c["settings"]:
        table.add_row(Text(str(name)), Text(str(d["settings"][name])), Text(str(c["settings"][name])))
    console.print(table)
    n_early = sum(r["stopped_early"] for r in result.rows)
    console.print(
        f"{len(result.rows)} configurations, {n_early} stopped early; Pareto front: {len(result.front)}; "
        f"profile -> {_esc(result.profile)} (use it in a study: guidance: {{profile: {_esc(result.profile)}}}); "
        f"MLflow run {_esc(result.parent_run_id)}"
    )
    return EXIT_OK


def _cmd_cohort_phantom(args: argparse.Namespace, console: Console) -> int:
    from rich.text import Text
    from salient.platform.cohort.phantom import write_phantom_cohort
    from salient.platform.study.schema import PhantomSpec

    try:
        spec = PhantomSpec(
            n_subjects=args.subjects,
            n_positive=args.positives,
            seed=args.seed,
            shape=tuple(args.shape),
            spacing=tuple(args.spacing),
        )
    except ValueError as exc:
        raise PlatformError(f"bad phantom settings: {exc}") from None
    manifest = write_phantom_cohort(spec, args.out_dir, progress=True)
    console.print(Text(f"wrote {spec.n_subjects} subjects ({spec.n_positive} positive) -> {manifest}"))
    return EXIT_OK


def _label_or_name(text: str | None) -> int | str | None:
    """``--lesion-label 2`` is the id 2, ``--lesion-label tumour`` a name in dataset.json."""
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else text


def _cmd_cohort_check(args: argparse.Namespace, console: Console) -> int:
    # Text, not markup: subject ids, file names and details are the user's strings ([/] must not
    # raise, [link=...] must print as typed).
    from rich.text import Text
    from salient.platform.cohort.check import check_cohort

    target = Path(args.path)
    if not target.exists():
        raise PlatformError(f"{target}: no such file or folder")
    report = check_cohort(
        target,
        progress=True,
        source=args.format,
        lesion_label=_label_or_name(args.lesion_label),
        channel=_label_or_name(args.channel) or 0,
        negatives=args.negatives,
        max_voxels=args.max_voxels,
    )
    n_neg = report.n_subjects - report.n_positive
    counts = f"{report.n_subjects} subjects, {report.n_positive} positive, {n_neg} negative"
    console.print(Text(f"{report.manifest} ({report.source}): {counts}"))
    if report.ok:
        console.print("[green]no problems found[/]")
        return EXIT_OK
    table = Table(title=f"{len(report.problems)} problem(s)")
    for col in ("subject", "problem", "detail"):
        table.add_column(col, overflow="fold")
    for p in report.problems:
        table.add_row(Text(p.subject), Text(p.kind), Text(p.detail))
    console.print(table)
    return EXIT_BAD_INPUT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="platform", description="SALIENT dose-search platform.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="run a study end to end",
        description="Run a study: train generators and detectors, evaluate, track in MLflow.",
    )
    p.add_argument("study", help="study YAML file, e.g. studies/dose_response.yaml")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store in the study's output folder)")
    p.add_argument("--address", help="join a Ray cluster: 'auto' or HOST:PORT (default: start a local Ray)")
    p.add_argument(
        "--resume", action="store_true", help="continue a stopped study (finished stages are never retrained)"
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "status",
        help="show a study's progress and results",
        description="Show which trials of a study are logged in MLflow, with their metrics.",
    )
    p.add_argument("study")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the study's embedded store)")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser(
        "validate",
        help="check a study file and print its trial plan",
        description="Validate a study file and print the expanded trial plan. Trains nothing.",
    )
    p.add_argument("study")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "plan",
        help="estimate a study's makespan on N workers (stage graph vs one trial per slot)",
        description="Print the study's stage graph, its critical path and the estimated makespan and utilisation "
        "on N workers, for the stage graph and for one trial per slot, from measured stage costs (stage cache) "
        "or a documented cost model. Trains nothing.",
    )
    p.add_argument("study")
    p.add_argument(
        "--workers", type=_int_in(1, 100_000), nargs="+", required=True, metavar="N", help="worker counts, e.g. 8 64"
    )
    p.add_argument(
        "--gpu-hours-per-stage",
        metavar="FILE",
        help="YAML {stage: hours on one worker} overriding the cost model, e.g. {diffusion: 9.0, detector: 0.1}",
    )
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser(
        "synth",
        help="write paired synthetic CT + mask NIfTI from a trained generator (cohort or nnU-Net dataset)",
        description="Draw lesion masks from a trained generator, synthesise them into healthy hosts and write a "
        "cohort folder (images/, masks/, labels.csv, synth.json) or, with --format nnunet, an nnU-Net v2 raw "
        "dataset OUT_ROOT/DatasetNNN_NAME/ (SYN_#### cases; REAL_#### with --include-real). Outside the "
        "synthesised slices each volume is its real host scan: treat the output as patient-derived data.",
    )
    p.add_argument(
        "--generator",
        required=True,
        metavar="RUN_PATH_OR_MODEL",
        help="MLflow run id of a trial with dose > 0, its pool folder OUTPUT_DIR/stage_cache/pool/<key>, or a "
        "registered generator models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/latest",
    )
    p.add_argument(
        "--masks",
        type=_int_in(1, MAX_SYNTH_MASKS),
        required=True,
        metavar="N",
        help=f"lesion masks to draw (one subject each), 1 to {MAX_SYNTH_MASKS}",
    )
    p.add_argument(
        "out_dir",
        metavar="OUT",
        help="cohort: a new (or empty) folder; nnunet: the nnUNet_raw folder that receives DatasetNNN_NAME/",
    )
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI for a run id or models:/ URI (default: $MLFLOW_TRACKING_URI)"
    )
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0, help="0 to 2**32 - 1 (default 0)")
    p.add_argument(
        "--min-pair-dice",
        type=_float_in(0.0, 1.0),
        metavar="D",
        help="write a lesion only if its UCMT pseudo-label agrees with its conditioning mask (Dice over the lesion "
        "block's slices >= D; 0 turns the check off); default: the check the generator's pool applied",
    )
    p.add_argument(
        "--cohort",
        metavar="DIR_MANIFEST_OR_DATASET",
        help="take healthy hosts from this cohort instead: a manifest (or its folder), an nnU-Net v2 DatasetNNN_* "
        "or an MSD Task* folder (healthy = cases without the lesion label)",
    )
    p.add_argument("--lesion-label", metavar="ID_OR_NAME", help="nnU-Net/MSD --cohort: the lesion's label id or name")
    p.add_argument("--channel", metavar="INDEX_OR_NAME", help="nnU-Net/MSD --cohort: the image channel (default 0)")
    p.add_argument("--format", choices=("cohort", "nnunet"), default="cohort", help="output layout (default cohort)")
    p.add_argument(
        "--dataset-id", type=_int_in(1, 999), metavar="N", help="nnunet: the dataset id (DatasetNNN), 1 to 999"
    )
    p.add_argument("--dataset-name", metavar="NAME", help="nnunet: letters, digits and '-' (default SalientSynthetic)")
    p.add_argument(
        "--include-real",
        action="store_true",
        help="nnunet: also write the generator's own training subjects (real scans, real masks) as REAL_#### cases",
    )
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser(
        "register-generator",
        help="register a trained generator in the MLflow Model Registry",
        description="Log a trial's generator (MaskVAE3D + diffusion + UCMT teacher weights, configs, record) as one "
        "MLflow model and register it as a new version of NAME; synth and tune-guidance then take "
        "--generator models:/NAME/VERSION. Subject ids are stored hashed unless --log-subject-ids.",
    )
    p.add_argument("--generator", required=True, metavar="RUN_OR_PATH", help="trial run id (dose > 0) or pool folder")
    p.add_argument("--name", required=True, help="registered model name (letters, digits, '_', '-', '.')")
    p.add_argument("--alias", help="also point this alias at the new version, e.g. champion")
    p.add_argument(
        "--log-subject-ids",
        action="store_true",
        help="store raw subject ids and the cohort path (default: sha256 ids, path's last name only)",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI of the store (default: $MLFLOW_TRACKING_URI)")
    p.set_defaults(func=_cmd_register_generator)

    p = sub.add_parser(
        "dashboard",
        help="browse studies in a web dashboard (127.0.0.1)",
        description="Serve a Dash app over an MLflow store: pick a study, see its dose-response curves, tables "
        "and samples. Refreshes every 5 s while a study runs.",
    )
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./salient_runs/mlflow.db if it exists)",
    )
    p.add_argument("--port", type=_int_in(1, 65535), default=8050)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--mlflow-ui", type=_mlflow_ui, metavar="URL", help=_MLFLOW_UI_HELP)
    p.set_defaults(func=_cmd_dashboard)

    p = sub.add_parser(
        "report",
        help="write a study's figures and tables to one offline HTML file",
        description="Write every figure and table of a study to one self-contained HTML file (plotly.js embedded).",
    )
    p.add_argument("study", help="study YAML file")
    p.add_argument("-o", "--output", required=True, metavar="REPORT_HTML")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the study's embedded store)")
    p.add_argument("--mlflow-ui", type=_mlflow_ui, metavar="URL", help=_MLFLOW_UI_HELP)
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="STUDY",
        help="other study files whose dose curves and validation gains are overlaid on this one's "
        "(e.g. the pixel-space arm of the same benchmark); each must have run",
    )
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "tune-guidance",
        help="tune the structured guidance of a generator for a cohort",
        description="Search s_mask, the s_nei(t) schedule and the sampling steps on the cohort's held-out lesion "
        "slices (mask Dice, Frechet and band-energy distance, sampling cost), with early stopping; write a "
        "guidance profile that studies reference with 'guidance: {profile: PATH}'.",
    )
    p.add_argument("--cohort", metavar="DIR_OR_MANIFEST", help="the cohort to tune for (default: the study's)")
    p.add_argument(
        "--generator",
        metavar="RUN_PATH_OR_MODEL",
        help="a trained generator (trial run id, pool folder, or models:/NAME/VERSION|@ALIAS|/latest); "
        "default: train one on the cohort",
    )
    p.add_argument(
        "--trials",
        type=_int_in(1, MAX_TUNING_TRIALS),
        help="configurations to try (default: the study's sampler.n_trials)",
    )
    p.add_argument(
        "--study", default="studies/guidance_autotune.yaml", help="tuning study file (kind: guidance_tuning)"
    )
    p.add_argument(
        "--for-study",
        metavar="STUDY_YAML",
        help="the dose study the profile is for: tuning uses only subjects that are neither test nor validation "
        "subjects of it in any repeat (default: the tuning study's own split settings)",
    )
    p.add_argument("-o", "--output", default="guidance_profile.yaml", metavar="PROFILE_YAML")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the study's embedded store)")
    p.add_argument("--address", help="join a Ray cluster: 'auto' or HOST:PORT")
    p.set_defaults(func=_cmd_tune_guidance)

    cohort = sub.add_parser("cohort", help="cohort tools", description="Create or check cohorts.")
    csub = cohort.add_subparsers(dest="cohort_command", required=True, metavar="ACTION")
    p = csub.add_parser(
        "phantom",
        help="write the built-in phantom cohort",
        description="Write a deterministic phantom torso CT cohort (NIfTI + labels.csv).",
    )
    p.add_argument("out_dir")
    p.add_argument("--subjects", type=int, default=96)
    p.add_argument("--positives", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs=3, default=[64, 64, 24], metavar=("X", "Y", "Z"))
    p.add_argument("--spacing", type=float, nargs=3, default=[6.0, 6.0, 8.0], metavar=("X", "Y", "Z"))
    p.set_defaults(func=_cmd_cohort_phantom)
    p = csub.add_parser(
        "check",
        help="list every problem in a cohort",
        description="Check a cohort: a folder with labels.csv or a manifest CSV, an nnU-Net v2 raw dataset "
        "(DatasetNNN_Name/) or an MSD task folder (TaskNN_Name/). Every NIfTI header is vetted before any voxel "
        "is read. Exit 2 if any problem is found.",
    )
    p.add_argument("path", metavar="PATH", help="cohort folder, manifest CSV, or dataset folder / its dataset.json")
    p.add_argument(
        "--format",
        choices=("auto", "manifest", "nnunet", "msd"),
        default="auto",
        help="cohort layout (default auto: labels.csv -> manifest, dataset.json with channel_names -> nnunet, "
        "with training -> msd)",
    )
    p.add_argument(
        "--lesion-label",
        metavar="ID_OR_NAME",
        help="nnunet/msd: the lesion's label id or name (default: the only foreground label)",
    )
    p.add_argument("--channel", metavar="INDEX_OR_NAME", help="nnunet/msd: the image channel used (default 0)")
    p.add_argument(
        "--negatives",
        choices=("include", "exclude"),
        default="include",
        help="nnunet/msd: cases without the lesion label are negatives (include, default) or left out",
    )
    p.add_argument(
        "--max-voxels",
        type=int,
        metavar="N",
        help="voxels a NIfTI header may claim (default $SALIENT_MAX_VOXELS, else 1024**3)",
    )
    p.set_defaults(func=_cmd_cohort_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "mlflow", "optuna", "ray", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_known_noise()  # known-harmless third-party lines, listed with why in salient.platform.console
    # emoji=False: a user's ":name:" prints as typed. Markup stays on for the platform's own
    # styling; user strings are escaped where they are printed.
    console = Console(stderr=False, emoji=False)
    try:
        return int(args.func(args, console))
    except PlatformError as exc:
        # Input that is too deep or too large to parse is turned into a PlatformError where it is
        # parsed (errors.input_limits, study.yaml_budget); a RecursionError or MemoryError that
        # arrives here is a bug and stays exit 1.
        print(f"error: {clip(str(exc), MAX_ERROR_CHARS)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is a failure, not the user's input
        if args.verbose:
            raise
        detail = clip(str(exc), MAX_ERROR_CHARS) or "(no message)"
        print(f"failed: {type(exc).__name__}: {detail} (rerun with -v for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
