"""``headline-cluster eval pairs|clusters`` and ``headline-cluster calibrate``: measure and fit on labels.

Both score with the product's own pipeline (normalize, embed, the level's similarity from
``cluster.settings``, ``group``), so a figure printed here is what ``collapse`` does with the same
settings. Import it through ``cluster.cli``, which registers these commands at its end.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import click
import numpy as np

from .cli_common import (
    FullHelpGroup,
    embedder_from,
    given_fields,
    input_format_option,
    model_option,
    output_format_option,
    reports_errors,
    text_field_option,
)
from .errors import InputError
from .evaluate import Cuts, cluster_metrics, pair_metrics, read_pairs
from .group import LINKAGES, group
from .judge import SIMILARITIES, Judgement
from .learned import LearnedParams, fit_logistic, impute, pair_features, probability
from .pipeline import EmbedderLike, prepare
from .records import read_records
from .settings import DEFAULT_LEVEL, LEVELS, judgement_for, save_threshold

level_option = click.option(
    "--level",
    type=click.Choice(LEVELS),
    default=DEFAULT_LEVEL,
    show_default=True,
    help="Whose settings score the pairs: event (same news event), story (an aggregator's coarser topic) "
    "or duplicate (same headline reworded).",
)
similarity_option = click.option(
    "--similarity",
    type=click.Choice(SIMILARITIES),
    help="Pairwise score (default: the one the level's settings use).",
)
lower_option = click.option(
    "--lower-is-similar",
    is_flag=True,
    help="Lower gold scores mean more similar (SemEval-2022 'Overall': 1 same story ... 4 different).",
)
same_cut_option = click.option(
    "--same-cut",
    type=float,
    help="Gold score from which a pair is 'same' (default 4, or <= 1.5 with --lower-is-similar).",
)
diff_cut_option = click.option(
    "--diff-cut",
    type=float,
    help="Gold score up to which a pair is 'different' (default 2, or >= 3.5 with --lower-is-similar).",
)


def _cuts(lower_is_similar: bool, same_cut: float | None, diff_cut: float | None) -> Cuts:
    cuts = Cuts.default(lower_is_similar, same_cut, diff_cut)
    overlapping = cuts.same <= cuts.diff if not lower_is_similar else cuts.same >= cuts.diff
    if overlapping:
        raise click.BadParameter(
            f"the 'same' cut {cuts.same:g} and the 'different' cut {cuts.diff:g} overlap ({cuts.describe()})"
        )
    return cuts


def _judgement(model_name: str, level: str, similarity: str | None) -> Judgement:
    judgement = judgement_for(model_name, level)
    if similarity is not None and similarity != judgement.kind:
        # The level's threshold was fitted for its own score; another score keeps the weights only.
        try:
            judgement = judgement.with_kind(similarity)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--similarity") from None
    return judgement


def score_pairs(
    texts_a: Sequence[str], texts_b: Sequence[str], embedder: EmbedderLike, judgement: Judgement
) -> np.ndarray:
    """The product's similarity of each pair (texts_a[k], texts_b[k]), scored in one collection."""
    prepared = prepare([*texts_a, *texts_b], embedder=embedder, judgement=judgement)
    n = len(texts_a)
    return prepared.similarity.pairs(np.arange(n), np.arange(n, 2 * n))


MIN_REFIT_PAIRS = 200  # fewer labelled pairs than this fit no weights: a threshold at most


def refit_learned(
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    gold: np.ndarray,
    cuts: Cuts,
    embedder: EmbedderLike,
    judgement: Judgement,
) -> tuple[LearnedParams | None, np.ndarray, str]:
    """Refit a learned judgement's weights on labelled pairs, pulled toward the shipped weights.

    Returns the new weights (None when there are too few 'same' and 'different' pairs), the pairs'
    scores under the weights that will be used, and a line saying what was done.
    """
    assert judgement.learned is not None
    prepared = prepare([*texts_a, *texts_b], embedder=embedder, judgement=judgement)
    n = len(texts_a)
    rows, cols = np.arange(n), np.arange(n, 2 * n)
    table = prepared.similarity.table  # a LearnedSimilarity
    features = pair_features(table, rows, cols)
    classes = cuts.classes(np.asarray(gold, dtype=np.float64))
    kept = (classes >= 0) & (features[:, 1] >= judgement.learned.gate)
    n_same, n_diff = int((classes[kept] == 1).sum()), int((classes[kept] == 0).sum())
    if n_same + n_diff < MIN_REFIT_PAIRS or min(n_same, n_diff) < 20:
        note = (
            f"{n_same} 'same' and {n_diff} 'different' pairs above the cosine gate: too few to refit the "
            f"weights (need {MIN_REFIT_PAIRS}, at least 20 of each); fitting the threshold only"
        )
        return None, probability(features, judgement.learned), note
    # Each class weighs half, so that the shipped prior's calibration is not skewed by the file's mix.
    y = (classes[kept] == 1).astype(np.float64)
    w = np.where(y == 1, 0.5 / n_same, 0.5 / n_diff)
    prior = np.asarray(judgement.learned.weights)
    beta = fit_logistic(impute(features[kept], judgement.learned.unknown_gap), y, w, l2=REFIT_L2, prior=prior)
    learned = LearnedParams(tuple(float(b) for b in beta), judgement.learned.gate, judgement.learned.unknown_gap)
    note = f"weights refitted on {n_same} 'same' and {n_diff} 'different' pairs (pulled toward the shipped ones)"
    return learned, probability(features, learned), note


REFIT_L2 = 0.05


def _emit(figures: dict, output_format: str, labels: dict[str, str]) -> None:
    if output_format == "json":
        click.echo(json.dumps(figures))
        return
    width = max(len(label) for label in labels.values())
    for key, label in labels.items():
        value = figures[key]
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        click.echo(f"{label:<{width}}  {shown}")


@click.group(name="eval", cls=FullHelpGroup)
def eval_group() -> None:
    """Measure the product's similarity and grouping on labelled data."""


@eval_group.command(name="pairs")
@click.argument("file", type=click.Path(dir_okay=False))
@lower_option
@same_cut_option
@diff_cut_option
@level_option
@similarity_option
@model_option
@output_format_option
@reports_errors
def eval_pairs_command(
    file: str,
    lower_is_similar: bool,
    same_cut: float | None,
    diff_cut: float | None,
    level: str,
    similarity: str | None,
    model: str | None,
    output_format: str,
) -> None:
    """Score the pairs of FILE and compare with its gold scores.

    FILE is a TSV whose header names score, text_a and text_b. Prints Spearman and Pearson correlation,
    ROC-AUC and the best F1 (with its threshold) of 'same' against 'different' pairs, and n.
    """
    cuts = _cuts(lower_is_similar, same_cut, diff_cut)
    pairs = read_pairs(file)
    embedder = embedder_from(model)
    scores = score_pairs(pairs.texts_a, pairs.texts_b, embedder, _judgement(embedder.name, level, similarity))
    figures = pair_metrics(scores, pairs.gold, cuts)
    labels = {
        "n": "pairs",
        "spearman": "Spearman",
        "pearson": "Pearson",
        "auc": f"ROC-AUC ({cuts.describe()})",
        "best_f1": "best F1",
        "best_threshold": "  at threshold",
    }
    _emit(figures, output_format, labels)


@eval_group.command(name="clusters")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--label-field", default="story", show_default=True, help="Column or key holding the true story.")
@input_format_option
@text_field_option
@click.option(
    "--time-field",
    default="published_at",
    show_default=True,
    help="Column or key holding the publication time (used when the level's similarity uses time).",
)
@click.option(
    "--threshold", "-t", type=click.FloatRange(-1.0, 1.0), help="Similarity needed to group (default: the level's)."
)
@level_option
@click.option("--linkage", type=click.Choice(LINKAGES), help="How groups are compared (default: the level's).")
@similarity_option
@model_option
@output_format_option
@reports_errors
def eval_clusters_command(
    file: str,
    label_field: str,
    input_format: str | None,
    text_field: str | None,
    time_field: str,
    threshold: float | None,
    level: str,
    linkage: str | None,
    similarity: str | None,
    model: str | None,
    output_format: str,
) -> None:
    """Group the headlines of a labelled FILE (jsonl, csv or tsv) and compare with the true stories.

    Prints pairwise and B-cubed precision, recall and F1, the adjusted Rand index, and the numbers of
    predicted and true stories.
    """
    read = read_records(
        file,
        input_format=input_format,
        text_field=text_field,
        time_field=time_field,
        required_fields=given_fields(),
    )
    labels = [_label(record, label_field, read.name) for record in read.records]
    embedder = embedder_from(model)
    judgement = _judgement(embedder.name, level, similarity)
    times = [r.published_at for r in read.records]
    prepared = prepare([r.text for r in read.records], embedder=embedder, judgement=judgement, times=times)
    grouping = group(
        prepared.similarity,
        judgement.threshold if threshold is None else threshold,
        linkage=linkage or judgement.linkage,
    )
    figures = cluster_metrics(labels, grouping.labels.tolist())
    names = {
        "n": "headlines",
        "true_stories": "true stories",
        "pred_stories": "predicted stories",
        "pairwise_precision": "pairwise precision",
        "pairwise_recall": "pairwise recall",
        "pairwise_f1": "pairwise F1",
        "bcubed_precision": "B-cubed precision",
        "bcubed_recall": "B-cubed recall",
        "bcubed_f1": "B-cubed F1",
        "ari": "adjusted Rand index",
    }
    _emit(figures, output_format, names)


def _label(record, field: str, name: str) -> str:
    known = {"id": record.id, "source": record.source, "url": record.url}
    value = record.extra.get(field) if field not in known else known[field]
    if value is None or not str(value).strip():
        raise InputError(
            f"no {field!r} label", path=name, line=record.line, hint="every row needs its true story; see --label-field"
        )
    return str(value).strip()


@click.command(name="calibrate")
@click.argument("file", type=click.Path(dir_okay=False))
@lower_option
@same_cut_option
@diff_cut_option
@level_option
@model_option
@click.option("--dry-run", is_flag=True, help="Print the fitted threshold without writing the config.")
@reports_errors
def calibrate_command(
    file: str,
    lower_is_similar: bool,
    same_cut: float | None,
    diff_cut: float | None,
    level: str,
    model: str | None,
    dry_run: bool,
) -> None:
    """Fit the --level threshold to your labelled pairs in FILE and store it for the other commands.

    FILE is a TSV whose header names score, text_a and text_b (as for `eval pairs`). The threshold is the
    one with the best F1 of 'same' against 'different' pairs under the level's own similarity; it is
    written to the settings file (HEADLINE_CLUSTER_CONFIG, else config.json in the cache folder).
    """
    cuts = _cuts(lower_is_similar, same_cut, diff_cut)
    pairs = read_pairs(file)
    embedder = embedder_from(model)
    model_name = embedder.name
    settings = judgement_for(model_name, level)
    learned = None
    if settings.kind == "learned":
        learned, scores, note = refit_learned(pairs.texts_a, pairs.texts_b, pairs.gold, cuts, embedder, settings)
        click.echo(note)
    else:
        scores = score_pairs(pairs.texts_a, pairs.texts_b, embedder, settings)
    figures = pair_metrics(scores, pairs.gold, cuts)
    threshold = round(figures["best_threshold"], 4)
    source = (
        f"calibrated on {Path(file).name} ({figures['n']} pairs, best F1 {figures['best_f1']:.3f}, "
        f"{settings.kind} similarity{', weights refitted' if learned else ''}, {date.today().isoformat()})"
    )
    click.echo(
        f"{level} threshold for {model_name}: {threshold:.4f} (was {settings.threshold:.4f}); "
        f"best F1 {figures['best_f1']:.3f}, AUC {figures['auc']:.3f} on {figures['n']} pairs"
    )
    if dry_run:
        return
    path = save_threshold(model_name, level, threshold, source, learned=learned)
    click.echo(f"written to {path}")
