"""``evalkit report --html``: one self-contained page, checked as a file and rendered in headless
Chromium (Debian's ``chromium`` package; `.ci/run` installs it and sets
EVALKIT_REQUIRE_CHROMIUM=1 so that CI fails instead of skipping when it is missing)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from synthetic_runs import fingerprint

from evalkit.cli import main
from evalkit.stats.config import StatsConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# As the machine notes say for a sandboxed root user with no network: no sandbox, no GPU, and no
# background connections (which the closed network refuses).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


class _Page(HTMLParser):
    """The parts of the page the tests look at: tags used, image sources, links and anchors."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        if values.get("id"):
            self.ids.add(values["id"])


@pytest.fixture
def report(runs: Path, tmp_path: Path) -> Path:
    out = tmp_path / "report"
    code = main(["report", str(runs), "--output_dir", str(out), "--html", "--stats.n_resamples", "200"])
    assert code == 0
    return out / "report.html"


def test_html_is_self_contained_and_every_number_links_to_its_run(report: Path):
    text = report.read_text()
    page = _Page()
    page.feed(text)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", text)  # nothing fetched from anywhere
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    assert len(page.images) == len(pngs) == 4
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    # every link is an in-page anchor that exists: one provenance entry per run (3 models x 2 tasks)
    assert page.links and all(link.startswith("#") and link[1:] in page.ids for link in page.links)
    assert {f"run-{i}" for i in range(1, 7)} <= page.ids
    # the main table shows what report.md shows, with the per-seed values in each cell's tooltip
    markdown = (report.parent / "report.md").read_text()
    best_a = re.search(r"\| best \| \*\*([\d.]+ ± [\d.]+)\*\*", markdown).group(1)
    assert f"<strong>{best_a}</strong>" in text
    assert re.search(r'title="3 runs: [\d., ]+; protocol sgd_kaiko; ', text)
    for section in ("Paired comparisons", "Friedman test", "Representation metrics", "Label efficiency",
                    "Provenance"):
        assert section in text
    assert "runs/task_a/best/run-1/results.json" in text  # relative to the working directory
    # provenance: the model's identity, and the resolved config.yaml written beside results.json
    assert f"{fingerprint('best')} (from the weights)" in text and "protocol: sgd_kaiko" in text


def test_report_without_html_writes_no_page(runs: Path, tmp_path: Path):
    from evalkit.report import write_report

    write_report([runs], tmp_path / "plain", stats=StatsConfig(n_resamples=100))
    assert (tmp_path / "plain" / "report.md").exists() and not (tmp_path / "plain" / "report.html").exists()


def _chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("EVALKIT_REQUIRE_CHROMIUM"),
                    reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it")
def test_html_renders_tables_and_images_in_headless_chromium(report: Path, tmp_path: Path):
    assert CHROMIUM, "EVALKIT_REQUIRE_CHROMIUM is set but no chromium is on PATH"
    # A copy of the page with a probe that records, once loaded, what the browser rendered: the
    # report itself carries no script.
    probe = """<script>window.addEventListener('load', () => {
      const imgs = [...document.images];
      const tables = [...document.querySelectorAll('table')];
      const result = {images: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
                      widths: imgs.map(i => i.getBoundingClientRect().width),
                      tables: tables.length, mainRows: tables[0].tBodies[0].rows.length,
                      mainText: tables[0].innerText, height: document.body.scrollHeight};
      const out = document.createElement('pre'); out.id = 'probe'; out.textContent = JSON.stringify(result);
      document.body.appendChild(out);
    });</script></body>"""
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", probe))
    done = _chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri(), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, "the page did not finish loading in Chromium"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert result["images"] == result["decoded"] == 4  # every embedded PNG decoded
    assert all(width > 300 for width in result["widths"])  # and laid out at a readable size
    assert result["tables"] >= 4 + 6  # main, paired, representation, label efficiency, one per run
    assert result["mainRows"] == 3
    assert all(model in result["mainText"] for model in ("best", "twin", "weak"))
    assert "task_a/test" in result["mainText"] and "±" in result["mainText"]

    screenshot = tmp_path / "report.png"
    done = _chromium(f"--screenshot={screenshot}", "--window-size=1280,1600", report.as_uri(), tmp_path=tmp_path)
    assert done.returncode == 0 and screenshot.exists(), done.stderr[-2000:]
    from PIL import Image, ImageStat

    image = Image.open(screenshot).convert("L")
    assert image.size == (1280, 1600)
    assert ImageStat.Stat(image).stddev[0] > 20  # text, tables and plots, not a blank page
