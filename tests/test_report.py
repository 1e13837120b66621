"""The nightly report's page: right-to-left headlines, unbroken times, a readable size chart, score bars
that tell 0.907 from 1.000. ``write_sample_report`` builds a real one (the index and ``run_nightly``)
for tests/test_browser.py too."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from test_store import FakeEmbedder

from cluster.nightly import run_nightly
from cluster.report import ReportData, render_report
from cluster.store import HeadlineIndex
from cluster.store.types import Headline, StoryInfo, StoryMember

ARABIC_STORIES = {
    "زلزال": [
        "زلزال بقوة 6.2 درجة يضرب جنوب تركيا ولا أنباء عن إصابات",
        "زلزال بقوة ٦٫٢ درجات يهز جنوب تركيا دون تسجيل إصابات",
        "لحظة وقوع زلزال جنوب تركيا بقوة 6.2 درجة",
    ],
    "الفائدة": ["البنك المركزي يرفع أسعار الفائدة ربع نقطة", "المركزي يقرر رفع الفائدة لمواجهة التضخم"],
    "storm": ["Storm Ada forces evacuations along the coast", "Thousands evacuated as Storm Ada batters the coast"],
}
SINGLE_HEADLINES = [
    "منتخب المغرب يتأهل إلى نصف نهائي كأس أفريقيا بعد الفوز على مصر",
    "الأهلي يعلن التعاقد مع مدرب برتغالي جديد لمدة موسمين",
    "افتتاح معرض الكتاب الدولي بمشاركة ألف دار نشر",
    "ارتفاع أسعار النفط مع تراجع المخزونات الأمريكية",
    "وزارة الصحة تطلق حملة تطعيم في المدارس",
    "إطلاق قمر صناعي جديد لرصد الطقس",
    "مهرجان السينما يعلن قائمة الأفلام المشاركة",
    "افتتاح جسر جديد يربط ضفتي النهر",
    "جامعة القاهرة تعلن مواعيد الامتحانات",
    "Local council approves new cycling lanes downtown",
    "Tech firm recalls faulty laptop batteries",
    "هطول أمطار غزيرة على العاصمة وتحذيرات من السيول",
]


class KeywordEmbedder(FakeEmbedder):
    """FakeEmbedder whose topics are Arabic keywords: the headlines must start with Arabic letters, or
    dir=auto would rightly make them left-to-right."""

    def _vector(self, text: str) -> np.ndarray:
        for number, word in enumerate(ARABIC_STORIES, start=1):
            if word in text.casefold():  # the normalized text it is given is casefolded
                return super()._vector(f"topic{number} {text}")
        return super()._vector(text)


def write_sample_report(folder: Path) -> Path:
    """A nightly report over Arabic (and some English) stories of several sizes and single-headline ones."""
    rows = []
    for word, texts in ARABIC_STORIES.items():
        rows += [{"id": f"{word}-{n}", "text": text} for n, text in enumerate(texts)]
    rows += [{"id": f"single-{n}", "text": text} for n, text in enumerate(SINGLE_HEADLINES)]
    for n, row in enumerate(rows):
        row["published_at"] = datetime(2024, 5, 1, n % 24, n % 60, tzinfo=timezone.utc)
    with HeadlineIndex.open(folder / "idx", create=True, embedder=KeywordEmbedder(), threshold=0.8) as index:
        index.add(rows)
        run_nightly(
            index, datetime(2024, 5, 1, tzinfo=timezone.utc), datetime(2024, 5, 2, tzinfo=timezone.utc), folder / "out"
        )
    return folder / "out" / "report.html"


def headline(row: int, text: str, story: str = "s000001") -> Headline:
    return Headline(row, f"h{row}", text, "2024-05-01T08:00:00Z", "wire", None, story, "2024-05-01T08:00:00Z", 0.0)


def story_of(scores: list[float], story_id: str = "s000001") -> StoryInfo:
    members = [StoryMember(headline(n, f"زلزال يضرب جنوب تركيا {n}", story_id), s) for n, s in enumerate(scores)]
    return StoryInfo(story_id, members[0].headline, members, "2024-05-01T08:00:00Z", "2024-05-01T09:00:00Z")


def report(sizes: list[int], largest: list[StoryInfo], threshold: float = 0.9) -> str:
    return render_report(
        ReportData(
            title="t",
            since="2024-05-01T00:00:00Z",
            until="2024-05-02T00:00:00Z",
            model="m",
            threshold=threshold,
            linkage="average",
            headlines=sum(sizes),
            sizes=sizes,
            within_pairs=np.array([0.95, 0.97]),
            apart_pairs=np.array([0.91]),
            largest=largest,
            changes=[],
            new_stories=0,
            changed=0,
        )
    )


def bar_heights(page: str, chart: str) -> list[float]:
    svg = re.search(rf'<svg[^>]*data-chart="{chart}".*?</svg>', page)
    assert svg is not None, f"no {chart} chart"
    return [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg[0])]


def test_story_sizes_are_log_scaled_so_small_counts_stay_visible() -> None:
    page = report([1] * 383 + [2] * 3 + [7], [story_of([1.0])])
    heights = bar_heights(page, "sizes")
    ones, twos, sevens = heights[0], heights[1], heights[5]  # bins 1, 2, and 6-10
    assert ones > twos > sevens > 0
    # Linear, 3 of 383 would be under 1% of the tallest bar; on log(1 + n) it is about a quarter.
    assert twos / ones > 0.2 and sevens / ones > 0.1
    assert 'data-scale="log"' in page and ">383</text>" in page and ">3</text>" in page


def test_score_bars_tell_close_scores_apart_and_print_the_value() -> None:
    page = report([3], [story_of([1.0, 0.907, 0.95])])
    widths = dict(re.findall(r'<svg class=score [^>]*data-score="([\d.]+)"><rect y="1" width="([\d.]+)"', page))
    full, close = float(widths["1.0000"]), float(widths["0.9070"])
    assert full == 80.0
    assert close < 0.5 * full  # on a 0-to-1 bar 0.907 would be 91% of the full one
    assert float(widths["0.9500"]) > close
    assert "<td class=num>0.907</td>" in page and "bar spans 0.90 to 1.00" in page


def test_a_member_below_the_threshold_moves_the_bar_floor_down() -> None:
    page = report([2], [story_of([1.0, 0.862])])
    assert "bar spans 0.85 to 1.00" in page
    widths = re.findall(r'data-score="0.8620"><rect y="1" width="([\d.]+)"', page)
    assert widths and 0 < float(widths[0]) < 80


def test_headline_cells_follow_their_own_direction_and_times_do_not_wrap() -> None:
    page = report([1], [story_of([1.0])])
    assert "<td dir=auto class=headline>زلزال" in page
    style = re.search(r"<style>(.*?)</style>", page, re.S)[1]
    # A text-align of left on the cells would pin right-to-left headlines to the left edge.
    assert "text-align:left;vertical" not in style and "text-align:start" in style
    assert ".time{white-space:nowrap}" in style
    assert "<td class='muted time'>2024-05-01T08:00:00Z</td>" in page


def test_one_headline_is_singular() -> None:
    page = report([1], [story_of([1.0])])
    assert "s000001 · 1 headline · " in page and "1 headlines" not in page


def test_a_real_nightly_report_has_both_charts_and_the_arabic_stories(tmp_path: Path) -> None:
    page = write_sample_report(tmp_path).read_text(encoding="utf-8")
    assert 'data-chart="sizes"' in page and 'data-chart="similarity"' in page
    assert "زلزال بقوة 6.2 درجة" in page and "3 headlines" in page


def test_largest_story_heading_names_the_representative_and_lists_it_first() -> None:
    # Twenty members; the representative is the last row, past the twelve shown.
    members = [StoryMember(headline(n, f"عنوان رقم {n}"), 0.9) for n in range(20)]
    rep = members[-1].headline
    story = StoryInfo("s000001", rep, members, "2024-05-01T08:00:00Z", "2024-05-01T09:00:00Z")
    page = report([20], [story])
    heading = re.search(r"<h3>.*?</h3>", page)[0]
    assert "عنوان رقم 19" in heading
    rows = re.findall(r"<tr( class=rep)?><td class=num>", page)
    assert rows[0] == " class=rep"  # the representative's row comes first, in bold


def test_charts_label_their_axes_and_name_the_score_scale() -> None:
    data = ReportData(
        title="t",
        since="2024-05-01T00:00:00Z",
        until="2024-05-02T00:00:00Z",
        model="m",
        threshold=0.35,
        linkage="average",
        headlines=3,
        sizes=[3],
        within_pairs=np.array([0.95, 0.97]),
        apart_pairs=np.array([0.41]),
        largest=[story_of([1.0, 0.9, 0.8])],
        changes=[],
        new_stories=0,
        changed=0,
        scale="probability of the same event",
    )
    page = render_report(data)
    for chart in ("sizes", "similarity"):
        svg = re.search(rf'<svg[^>]*data-chart="{chart}".*?</svg>', page)[0]
        assert 'data-axis="x"' in svg and 'data-axis="y"' in svg
    similarity = re.search(r'<svg[^>]*data-chart="similarity".*?</svg>', page)[0]
    assert "probability of the same event of the pair" in similarity
    assert "score: probability of the same event with the representative" in page


def test_a_real_nightly_report_names_its_scale(tmp_path: Path) -> None:
    page = write_sample_report(tmp_path).read_text(encoding="utf-8")
    # The fake model's judgement is a cosine; the page says so rather than a generic "similarity".
    assert "judgement's cosine" in page
