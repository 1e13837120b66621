"""Evaluation metrics on hand-worked cases, the pairs reader's errors, and the eval/calibrate commands.

The commands are exercised with a stand-in embedder (character-trigram vectors), so these tests check
the plumbing and the JSON shapes without loading the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cluster.cli import main
from cluster.errors import InputError
from cluster.evaluate import (
    CLUSTER_KEYS,
    PAIR_KEYS,
    Cuts,
    best_f1,
    cluster_metrics,
    pair_metrics,
    read_pairs,
    roc_auc,
)

# --- pair metrics ---------------------------------------------------------------------------------------


def test_auc_counts_ordered_pairs_and_halves_ties() -> None:
    # positives 0.9, 0.5; negatives 0.5, 0.1: of 4 (pos, neg) pairs, 3 are won and 1 tied -> 3.5 / 4
    assert roc_auc(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0], bool)) == pytest.approx(0.875)


def test_auc_is_one_for_perfect_separation_and_zero_when_reversed() -> None:
    positive = np.array([1, 1, 0, 0], bool)
    assert roc_auc(np.array([4.0, 3, 2, 1]), positive) == 1.0
    assert roc_auc(np.array([1.0, 2, 3, 4]), positive) == 0.0


def test_best_f1_threshold_falls_between_the_classes() -> None:
    f1, threshold = best_f1(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 0, 0], bool))
    assert f1 == 1.0
    assert threshold == pytest.approx(0.75)


def test_best_f1_never_splits_tied_scores() -> None:
    # The tie at 0.8 holds one positive and one negative: the best rule takes both or neither.
    f1, threshold = best_f1(np.array([0.9, 0.8, 0.8, 0.1]), np.array([1, 1, 0, 0], bool))
    assert f1 == pytest.approx(0.8)  # all three >= 0.8: P 2/3, R 1 -> 0.8; only 0.9: P 1, R 1/2 -> 0.667
    assert 0.1 < threshold <= 0.8


def test_pair_metrics_with_lower_is_similar_report_higher_is_better() -> None:
    gold = np.array([1.0, 1.0, 2.0, 4.0, 4.0])  # 1 = same story ... 4 = different
    similarity = np.array([0.95, 0.9, 0.8, 0.7, 0.6])
    figures = pair_metrics(similarity, gold, Cuts.default(lower_is_similar=True))
    assert list(figures) == list(PAIR_KEYS)
    assert figures["spearman"] > 0.9
    assert figures["auc"] == 1.0
    assert figures["n"] == 5


def test_pair_metrics_name_the_cuts_when_a_class_is_empty() -> None:
    with pytest.raises(InputError, match="0 'same'"):
        pair_metrics(np.array([0.1, 0.2, 0.3]), np.array([0.0, 1.0, 3.0]), Cuts.default(False))


def test_default_cuts() -> None:
    assert Cuts.default(False).classes(np.array([5, 4, 3, 2, 0])).tolist() == [1, 1, -1, 0, 0]
    assert Cuts.default(True).classes(np.array([1, 1.5, 2, 3.5, 4])).tolist() == [1, 1, -1, 0, 0]


# --- cluster metrics ------------------------------------------------------------------------------------


def test_cluster_metrics_perfect() -> None:
    figures = cluster_metrics(["a", "a", "b", "c"], [7, 7, 3, 1])
    assert list(figures) == list(CLUSTER_KEYS)
    assert figures["bcubed_f1"] == figures["pairwise_f1"] == figures["ari"] == 1.0
    assert figures["true_stories"] == figures["pred_stories"] == 3


def test_cluster_metrics_worked_example() -> None:
    # True {0,1,2} {3}; predicted {0,1} {2,3}.
    figures = cluster_metrics(["x", "x", "x", "y"], [0, 0, 1, 1])
    # Pairwise: true pairs 3, predicted pairs 2, shared 1 -> P 1/2, R 1/3.
    assert figures["pairwise_precision"] == pytest.approx(0.5)
    assert figures["pairwise_recall"] == pytest.approx(1 / 3)
    # B-cubed precision per item: 1, 1, 1/2, 1/2 -> 0.75; recall: 2/3, 2/3, 1/3, 1 -> 2/3.
    assert figures["bcubed_precision"] == pytest.approx(0.75)
    assert figures["bcubed_recall"] == pytest.approx(2 / 3)
    # ARI: index 1, expected 3*2/6 = 1, max 2.5 -> (1 - 1) / (2.5 - 1) = 0.
    assert figures["ari"] == pytest.approx(0.0)


def test_all_in_one_cluster_has_full_recall_and_low_precision() -> None:
    figures = cluster_metrics([1, 1, 2, 2, 3, 3], [0] * 6)
    assert figures["bcubed_recall"] == 1.0
    assert figures["bcubed_precision"] == pytest.approx(1 / 3)
    assert figures["pred_stories"] == 1


# --- reading pairs --------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "pairs.tsv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_pairs_any_column_order(tmp_path: Path) -> None:
    path = write(tmp_path, 'text_a\tscore\ttext_b\n"Quoted" head\t4.5\tother\nx\t1\ty\n')
    pairs = read_pairs(path)
    assert pairs.gold.tolist() == [4.5, 1.0]
    assert pairs.texts_a == ['"Quoted" head', "x"]
    assert pairs.lines == [2, 3]


@pytest.mark.parametrize(
    ("content", "where", "what"),
    [
        ("score\ttext_a\n1\ta\n", ":1:", "lacks text_b"),
        ("score\ttext_a\ttext_b\n1\ta\tb\nhigh\ta\tb\n", ":3:", "not a number"),
        ("score\ttext_a\ttext_b\n1\ta\tb\n2\ta\n", ":3:", "2 tab-separated fields"),
        ("score\ttext_a\ttext_b\n1\ta\tb\n2\t \tb\n", ":3:", "empty"),
        ("score\ttext_a\ttext_b\n1\ta\tb\nnan\ta\tb\n", ":3:", "finite"),
    ],
)
def test_read_pairs_errors_name_file_and_line(tmp_path: Path, content: str, where: str, what: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(InputError) as caught:
        read_pairs(path)
    assert f"{path}{where}" in str(caught.value)
    assert what in str(caught.value)


def test_read_pairs_rejects_bad_utf8_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"score\ttext_a\ttext_b\n1\ta\tb\n2\t\xff\tb\n")
    with pytest.raises(InputError, match=r"bad.tsv:3: not valid UTF-8"):
        read_pairs(path)


# --- commands, with a stand-in embedder -----------------------------------------------------------------


class TrigramEmbedder:
    """Hashing-trick trigram vectors: similar strings get similar unit vectors, deterministically."""

    name = "multilingual-e5-small"

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for row, text in enumerate(texts):
            padded = f"  {text}  "
            for k in range(len(padded) - 2):
                out[row, sum(map(ord, padded[k : k + 3])) % 256] += 1.0
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private settings file; the commands run with the stand-in embedder through ``invoke``."""
    config = tmp_path / "config.json"
    monkeypatch.setenv("HEADLINE_CLUSTER_CONFIG", str(config))
    return config


def invoke(args: list[str]):
    return CliRunner().invoke(main, args, obj={"embedder": TrigramEmbedder()})


PAIRS = (
    "score\ttext_a\ttext_b\n"
    "5\tOil prices rise on supply fears\tOil prices rise on supply fears again\n"
    "4.2\tStocks fall in Tokyo trading\tStocks fall in Tokyo trade\n"
    "0\tOil prices rise on supply fears\tFootball club signs new coach\n"
    "0.5\tStocks fall in Tokyo trading\tHeavy rain floods village roads\n"
    "3\tStocks fall in Tokyo\tTokyo shares slip\n"
)


def test_eval_pairs_json_keys(tmp_path: Path, fake_model: Path) -> None:
    result = invoke(["eval", "pairs", str(write(tmp_path, PAIRS)), "--format", "json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert list(figures) == list(PAIR_KEYS)
    assert figures["n"] == 5
    assert figures["auc"] == 1.0  # the stand-in separates these easy pairs completely
    assert isinstance(figures["n"], int)


def test_eval_pairs_text_output(tmp_path: Path, fake_model: Path) -> None:
    result = invoke(["eval", "pairs", str(write(tmp_path, PAIRS))])
    assert result.exit_code == 0, result.output
    assert "Spearman" in result.output and "ROC-AUC" in result.output


def test_eval_pairs_bad_file_exits_2_without_traceback(tmp_path: Path, fake_model: Path) -> None:
    path = write(tmp_path, "score\ttext_a\ttext_b\n1\ta\tb\nx\ta\tb\n")
    result = invoke(["eval", "pairs", str(path)])
    assert result.exit_code == 2
    assert f"{path}:3:" in result.output
    assert "Traceback" not in result.output


def test_eval_pairs_rejects_overlapping_cuts(tmp_path: Path, fake_model: Path) -> None:
    path = write(tmp_path, PAIRS)
    result = invoke(["eval", "pairs", str(path), "--same-cut", "2", "--diff-cut", "3"])
    assert result.exit_code == 2
    assert "overlap" in result.output


CLUSTERS = (
    "id\tstory\tpublished_at\ttext\n"
    "1\ta\t2024-05-01T10:00:00Z\tOil prices rise on supply fears\n"
    "2\ta\t2024-05-01T11:00:00Z\tOil prices rise on supply fears, traders say\n"
    "3\tb\t2024-05-01T10:30:00Z\tFootball club signs new coach\n"
    "4\tb\t2024-05-01T12:00:00Z\tFootball club signs a new coach\n"
    "5\tc\t2024-05-02T09:00:00Z\tHeavy rain floods village roads\n"
)


def test_eval_clusters_json_keys(tmp_path: Path, fake_model: Path) -> None:
    path = write(tmp_path, CLUSTERS, "stories.tsv")
    # Plain cosine at 0.8: the stand-in's vectors are not the default model's, whose learned judgement
    # reads -t as a probability.
    args = ["eval", "clusters", str(path), "--label-field", "story", "--format", "json", "-t", "0.8"]
    result = invoke([*args, "--similarity", "cosine"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert list(figures) == list(CLUSTER_KEYS)
    assert figures["n"] == 5 and figures["true_stories"] == 3
    assert figures["bcubed_f1"] == 1.0


def test_eval_clusters_missing_label_names_line(tmp_path: Path, fake_model: Path) -> None:
    path = write(tmp_path, CLUSTERS.replace("3\tb\t", "3\t\t"), "stories.tsv")
    result = invoke(["eval", "clusters", str(path)])
    assert result.exit_code == 2
    assert f"{path}:4: no 'story' label" in result.output


def test_calibrate_writes_the_config_that_settings_read(tmp_path: Path, fake_model: Path) -> None:
    from cluster.settings import judgement_for

    path = write(tmp_path, PAIRS)
    result = invoke(["calibrate", str(path), "--level", "duplicate"])
    assert result.exit_code == 0, result.output
    stored = json.loads(fake_model.read_text(encoding="utf-8"))
    threshold = stored["models"]["multilingual-e5-small"]["duplicate"]["threshold"]
    settings = judgement_for("multilingual-e5-small", "duplicate")
    assert settings.threshold == threshold
    assert "calibrated on pairs.tsv" in settings.source
    # The other level is untouched.
    assert "story" not in stored["models"]["multilingual-e5-small"]


def test_calibrate_dry_run_writes_nothing(tmp_path: Path, fake_model: Path) -> None:
    result = invoke(["calibrate", str(write(tmp_path, PAIRS)), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert not fake_model.exists()


class NearEmbedder(TrigramEmbedder):
    """Trigram vectors pulled toward one common direction, so cosines sit on e5's scale (0.8-1)."""

    def encode(self, texts: list[str]) -> np.ndarray:
        out = super().encode(texts) + 2.0 / np.sqrt(256)
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def test_calibrate_refits_the_learned_weights_from_enough_pairs(tmp_path: Path, fake_model: Path) -> None:
    from cluster.settings import judgement_for

    topics = ["oil prices", "tokyo stocks", "football club", "heavy rain", "gold price", "the senate", "a storm"]
    lines = ["score\ttext_a\ttext_b"]
    for k in range(150):
        a, b = topics[k % len(topics)], topics[(k + 3) % len(topics)]
        lines.append(f"5\t{a} news number {k}\t{a} news number {k} again")
        lines.append(f"0\t{a} report {k}\t{b} story {k + 1}")
    path = write(tmp_path, "\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["calibrate", str(path), "--level", "event"], obj={"embedder": NearEmbedder()})
    assert result.exit_code == 0, result.output
    stored = json.loads(fake_model.read_text(encoding="utf-8"))["models"]["multilingual-e5-small"]["event"]
    shipped = judgement_for("multilingual-e5-small", "duplicate")  # another level: untouched
    assert "refitted" in result.output and "learned" in stored
    settings = judgement_for("multilingual-e5-small", "event")
    assert settings.kind == "learned" and settings.threshold == stored["threshold"]
    assert settings.learned is not None and settings.learned.to_dict()["weights"] == stored["learned"]["weights"]
    assert shipped.source.startswith("built-in")


def test_calibrate_with_few_pairs_fits_only_the_threshold(tmp_path: Path, fake_model: Path) -> None:
    result = invoke(["calibrate", str(write(tmp_path, PAIRS)), "--level", "event"])
    assert result.exit_code == 0, result.output
    assert "too few to refit" in result.output
    stored = json.loads(fake_model.read_text(encoding="utf-8"))["models"]["multilingual-e5-small"]["event"]
    assert "learned" not in stored
