"""Figures: `mt-repro plot` in the paper's Fig. 3 style (one colour per method, student solid,
teacher dashed, a band over seeds, axes that keep every point), the digits demo's result
figure, and the HTML report's figures as headless Chromium renders them."""
import html
import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen
from matplotlib.collections import PathCollection, PolyCollection

from mt_repro.paper import plot

REPO = Path(__file__).resolve().parents[1]
SATURATED = 60   # max - min of a pixel's RGB above this: a curve's colour, not black, grey or white


def make_run(directory, method, seed, *, evaluations=10, steps=1000, rows=50, n_labeled=4000,
             arch="cifar_shakeshake26", training_error_floor=0.0, config=True):
    """A run as our trainer leaves it: config.json, summary.json and the three JSONL logs,
    with curves that fall with the steps and differ a little by seed (without config.json the
    summary alone names the method, as older runs)."""
    directory.mkdir(parents=True)
    if config:
            (directory / "config.json").write_text(json.dumps({"method": method, "dataset": "cifar10", "arch": arch,
                                                           "eval_subdir": "test", "seed": seed}))
    final = {"supervised": 20.0, "mean_teacher": 6.0}.get(method, 10.0) + seed
    summary = {"method": method, "dataset": "cifar10", "arch": arch, "n_labeled": n_labeled,
               "global_step": steps, "teacher_error1": final, "student_error1": final + 1}
    (directory / "summary.json").write_text(json.dumps(summary))
    with open(directory / "training.jsonl", "w") as f:
        for step in np.linspace(1, steps, rows).round():
            cost = 2.3 * math.exp(-step / (steps / 6)) + 0.005 * (1 + seed)
            error = max(training_error_floor, 90 * math.exp(-step / (steps / 5)) - 3)   # reaches 0 %
            f.write(json.dumps({"step": int(step), "class_loss": cost * 1.1, "ema_class_loss": cost,
                                "error1": error, "ema_error1": error * 0.9}) + "\n")
    for log, extra in (("validation.jsonl", 1.0), ("ema_validation.jsonl", 0.0)):
        with open(directory / log, "w") as f:
            for step in np.linspace(steps / evaluations, steps, evaluations).round():
                error = final + extra + 80 * math.exp(-step / (steps / 4))
                f.write(json.dumps({"step": int(step), "error1/avg": error}) + "\n")
    return directory


def methods_runs(root, methods=("mean_teacher", "supervised"), seeds=3, **kwargs):
    return [make_run(root / f"{method}_{seed}", method, seed, **kwargs) for method in methods for seed in range(seeds)]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def legend_texts(axis):
    return [t.get_text() for t in axis.get_legend().get_texts()]


def drawn_lines(axis):
    return [line for line in axis.get_lines() if len(line.get_xdata())]


# --- the output file -------------------------------------------------------------------------------------
def test_an_extension_that_is_not_png_pdf_or_svg_is_refused_before_anything_is_read(cli, tmp_path):
    methods_runs(tmp_path / "runs", seeds=1)
    for name in ("curves.txt", "curves"):
        assert_one_line_error(cli("plot", tmp_path / "runs", "--out", tmp_path / name), name, ".png, .pdf or .svg")
        assert not (tmp_path / name).exists()
    assert_one_line_error(cli("plot", tmp_path / "missing", "--out", tmp_path / "x.jpg"), "x.jpg")


@pytest.mark.parametrize("name, magic", [("c.png", b"\x89PNG"), ("c.PDF", b"%PDF"), ("c.svg", b"<?xml")])
def test_the_extension_picks_the_format(cli, tmp_path, name, magic):
    methods_runs(tmp_path / "runs", seeds=2)
    code, _, err = cli("plot", tmp_path / "runs", "--out", tmp_path / name)
    assert code == 0, err
    assert (tmp_path / name).read_bytes().startswith(magic)


# --- the curves ------------------------------------------------------------------------------------------
def test_one_colour_and_one_legend_entry_per_method_not_per_run(tmp_path):
    methods_runs(tmp_path / "runs", methods=("pi_model", "mean_teacher", "supervised"), seeds=3)
    fig = plot.figure([tmp_path / "runs"])
    test_axis = fig.axes[0]
    assert test_axis.get_ylabel() == "test error %"
    texts = legend_texts(test_axis)
    # in the tables' order: supervised, mean teacher, then the others
    assert texts[:3] == ["supervised (3 runs)", "mean teacher (3 runs)", "pi model (3 runs)"]
    assert texts[3:5] == ["student", "teacher (EMA)"]
    lines = drawn_lines(test_axis)
    assert len(lines) == 6                                    # 3 methods x (student, teacher), not 9 runs x 2
    assert len({matplotlib.colors.to_hex(line.get_color()) for line in lines}) == 3


def test_student_is_solid_and_teacher_dashed_in_every_method_colour(tmp_path):
    methods_runs(tmp_path / "runs", seeds=2)
    fig = plot.figure([tmp_path / "runs"])
    for axis in fig.axes[:2]:   # the test error and the training cost
        styles = {}
        for line in drawn_lines(axis):
            styles.setdefault(matplotlib.colors.to_hex(line.get_color()), []).append(line.get_linestyle())
        assert len(styles) == 2 and all(sorted(s) == ["-", "--"] for s in styles.values()), styles


def test_the_band_is_mean_plus_minus_std_over_two_or_more_seeds_and_absent_for_one(tmp_path):
    methods_runs(tmp_path / "two", methods=("mean_teacher",), seeds=2)
    methods_runs(tmp_path / "one", methods=("mean_teacher",), seeds=1)
    fig = plot.figure([tmp_path / "two"])
    bands = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2                                   # student and teacher
    teacher = [json.loads(line) for line in (tmp_path / "two" / "mean_teacher_1" / "ema_validation.jsonl")
               .read_text().splitlines()]
    seed0 = [json.loads(line) for line in (tmp_path / "two" / "mean_teacher_0" / "ema_validation.jsonl")
             .read_text().splitlines()]
    pair = np.array([[a["error1/avg"], b["error1/avg"]] for a, b in zip(seed0, teacher)])
    top = max(band.get_paths()[0].vertices[:, 1].max() for band in bands)
    assert top == pytest.approx((pair.mean(axis=1) + pair.std(axis=1, ddof=1)).max() + 1.0)   # the student's
    assert not [c for c in plot.figure([tmp_path / "one"]).axes[0].collections if isinstance(c, PolyCollection)]


def test_seeds_logged_at_other_steps_are_averaged_where_they_overlap():
    band = plot.aggregate([(np.array([0.0, 10.0]), np.array([10.0, 0.0])),
                           (np.array([0.0, 5.0, 20.0]), np.array([20.0, 10.0, 10.0]))])
    assert band.steps.tolist() == [0, 5, 10, 20]
    assert band.mean.tolist() == [15, 7.5, 5, 10]            # the first run counts only up to its step 10
    assert band.std[0] == pytest.approx(math.sqrt(50)) and math.isnan(band.std[-1])


def test_zero_percent_points_stay_on_a_linear_axis_and_wide_ranges_get_a_log_axis_with_plain_labels(tmp_path):
    run = make_run(tmp_path / "run", "mean_teacher", 0, evaluations=1)   # one evaluation: minibatch error shown
    fig = plot.figure([run])
    _, cost_axis, minibatch_axis = fig.axes
    assert "training" in minibatch_axis.get_ylabel() and minibatch_axis.get_yscale() == "linear"
    assert minibatch_axis.get_ylim()[0] == 0
    for line in drawn_lines(minibatch_axis):                  # the 0 % points are drawn, not NaN
        assert np.isfinite(line.get_ydata()).all() and (np.asarray(line.get_ydata()) == 0).any()
    assert cost_axis.get_yscale() == "log"                    # 2.3 down to 0.005
    fig.canvas.draw()
    labels = [t.get_text() for t in cost_axis.get_yticklabels() if t.get_text()]
    assert len(labels) >= 2 and all(re.fullmatch(r"[0-9.,]+", label) for label in labels), labels


def test_a_one_row_log_leaves_no_panel_empty(tmp_path):
    run = make_run(tmp_path / "run", "mean_teacher", 0, evaluations=1, rows=1)
    fig = plot.figure([run])
    assert len(fig.axes) == 3
    for axis in fig.axes:
        points = [np.column_stack([line.get_xdata(), line.get_ydata()]) for line in drawn_lines(axis)]
        finite = [p for p in points if np.isfinite(p).all()]
        assert finite, axis.get_ylabel()
        # a single point is drawn with a marker (a line through one point shows nothing) inside the view
        assert all(line.get_marker() not in (None, "None", "") for line in drawn_lines(axis) if len(line.get_xdata()) == 1)
        (x0, x1), (y0, y1) = axis.get_xlim(), axis.get_ylim()
        assert any(x0 < x < x1 and y0 < y < y1 for p in finite for x, y in p), axis.get_ylabel()


def test_methods_differing_in_labels_are_named_by_what_differs(tmp_path):
    make_run(tmp_path / "runs" / "a", "mean_teacher", 0, n_labeled=4000)
    make_run(tmp_path / "runs" / "b", "mean_teacher", 0, n_labeled=1000)
    texts = legend_texts(plot.figure([tmp_path / "runs"]).axes[0])
    assert texts[:2] == ["mean teacher, 1000 labels (1 run)", "mean teacher, 4000 labels (1 run)"]


def test_a_resumed_run_that_logged_steps_twice_is_one_curve_forward_in_steps(tmp_path):
    run = make_run(tmp_path / "run", "mean_teacher", 0)
    rows = (run / "training.jsonl").read_text().splitlines()
    (run / "training.jsonl").write_text("\n".join(rows + rows[10:]) + "\n")   # logged again after a resume
    for line in drawn_lines(plot.figure([run]).axes[1]):
        assert np.all(np.diff(line.get_xdata()) > 0)


# --- the digits demo's figure ----------------------------------------------------------------------------
def test_the_digits_demo_writes_its_table_as_a_figure_beside_it(cli, tmp_path):
    from mt_repro import cli as cli_module

    errors = {"supervised": [4.8, 3.4, 3.4], "mean_teacher": [2.6, 2.6, 2.8], "vat": [1.8, 1.8, 2.8]}
    result = SimpleNamespace(table=lambda: "the table", rows=list(errors), n_labels=100,
                             errors=lambda method: errors[method])
    cli_module._print_demo(result, tmp_path)
    assert (tmp_path / "results.txt").read_text() == "the table\n"
    image = np.asarray(Image.open(tmp_path / "results.png").convert("RGB"), dtype=int)
    assert image.shape[1] > 600 and ((image.max(axis=2) - image.min(axis=2)) > SATURATED).sum() > 200

    fig = plot.result_figure(list(errors.items()))
    axis = fig.axes[0]
    dots = [c for c in axis.collections if isinstance(c, PathCollection)]
    assert [d.get_offsets().shape[0] for d in dots] == [3, 3, 3]            # one dot per seed
    assert [t.get_text() for t in axis.get_yticklabels()] == ["supervised", "mean teacher", "vat"]
    texts = [t.get_text() for t in axis.texts]
    assert "3.87 ± 0.81" in texts and "2.67 ± 0.12" in texts               # the table's mean ± std
    assert axis.get_xlim()[0] == 0


# --- the HTML report in a browser ------------------------------------------------------------------------
PROBE = """<script>
// For every figure: its decoded size, and the coloured pixels inside each panel (boxes in pixels,
// the legend's area left out), counted on a canvas once the page has loaded.
const BOXES = %s;
window.addEventListener("load", () => {
  const found = [...document.images].map((img, i) => {
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(img, 0, 0);
    const counts = (BOXES[i] || []).map(([x0, y0, x1, y1, skip]) => {
      const data = context.getImageData(x0, y0, x1 - x0, y1 - y0).data;
      let n = 0;
      for (let p = 0; p < data.length; p += 4) {
        const x = x0 + (p / 4) %% (x1 - x0), y = y0 + Math.floor(p / 4 / (x1 - x0));
        if (skip && x >= skip[0] && x <= skip[2] && y >= skip[1] && y <= skip[3]) continue;
        const hi = Math.max(data[p], data[p + 1], data[p + 2]), lo = Math.min(data[p], data[p + 1], data[p + 2]);
        if (hi - lo > %d) n++;
      }
      return n;
    });
    return {width: img.naturalWidth, height: img.naturalHeight, caption: img.alt, counts};
  });
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>"""


def chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("Chromium not found (Debian: apt-get install chromium; .ci/run installs it): "
                    "the HTML report was not rendered in a browser")
    return found


def panel_boxes(runs, caption):
    """Each panel of the figure the report draws for ``runs``, in its PNG's pixels, with the
    legend's box (drawn inside the first panel) to leave out."""
    fig = plot.figure(runs, caption)
    fig.set_dpi(100)   # as plot.png_bytes writes it
    fig.canvas.draw()
    height = fig.bbox.height
    legend = fig.axes[0].get_legend().get_window_extent()
    boxes = []
    for axis in fig.axes:
        box = axis.get_window_extent()
        skip = [legend.x0, height - legend.y1, legend.x1, height - legend.y0] if axis is fig.axes[0] else None
        boxes.append([int(box.x0) + 3, int(height - box.y1) + 3, int(box.x1) - 3, int(height - box.y0) - 3, skip])
    plt.close(fig)
    return boxes


def test_every_figure_of_the_html_report_loads_in_chromium_and_no_panel_is_empty(cli, tmp_path):
    browser = chromium()
    cells = {"4000 labels": methods_runs(tmp_path / "runs" / "c4000", methods=("mean_teacher",), seeds=3,
                                         config=False),
             "1000 labels": methods_runs(tmp_path / "runs" / "c1000", methods=("mean_teacher",), seeds=2,
                                         n_labeled=1000, evaluations=1, rows=1, config=False)}   # one-row logs
    code, _, err = cli("compare", tmp_path / "runs", "--html", tmp_path / "report.html")
    assert code in (0, 1) and (tmp_path / "report.html").is_file(), err
    page = (tmp_path / "report.html").read_text()
    captions = [html.unescape(c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", page)]
    assert len(captions) == 2 and page.count("<img") == 2, captions
    boxes = [panel_boxes(next(runs for name, runs in cells.items() if name in caption), caption)
             for caption in captions]
    (tmp_path / "probe.html").write_text(page.replace("</body>", PROBE % (json.dumps(boxes), SATURATED) + "</body>"))
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
         (tmp_path / "probe.html").as_uri()], capture_output=True, text=True, timeout=180, check=False)
    probe = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.DOTALL)
    assert probe, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    figures = json.loads(html.unescape(probe.group(1)))
    assert [f["caption"] for f in figures] == captions
    for figure, panels in zip(figures, boxes):
        assert figure["width"] > 300 and figure["height"] > 300, figure
        assert len(figure["counts"]) == len(panels) >= 2, figure
        assert all(count > 20 for count in figure["counts"]), figure   # every panel shows its data


# --- the README's figures --------------------------------------------------------------------------------
README = REPO / "README.md"


def readme_demo_table(lines, before):
    """The rows (method, errors per seed) of the last demo table printed above line ``before``."""
    start = max(i for i, line in enumerate(lines[:before]) if line.startswith("test error %"))
    rows = []
    for line in lines[start + 2:]:
        match = re.fullmatch(r"([a-z ]+?)\s{2,}([0-9. ]+?)\s+[0-9.]+ ± [0-9.]+", line)
        if not match:
            break
        rows.append((match.group(1).replace(" ", "_"), [float(v) for v in match.group(2).split()]))
    return rows


def test_the_readme_figures_are_small_and_what_the_command_beside_them_draws(tmp_path):
    from mt_repro import cli as cli_module

    lines = README.read_text().splitlines()
    figures = [(i, m.group(1)) for i, line in enumerate(lines) for m in re.finditer(r"!\[[^\]]*\]\(([^)]+)\)", line)]
    assert figures
    for index, path in figures:
        committed = REPO / path
        assert committed.is_file() and committed.stat().st_size < 150_000, path
        command = next(line for line in reversed(lines[:index]) if line.startswith("mt-repro "))
        labels = re.fullmatch(r"mt-repro digits --labels (\d+)", command)
        assert labels, f"{path}: no digits command before it to regenerate it with ({command})"
        rows = readme_demo_table(lines, index)
        assert rows and rows[0][0] == "supervised", rows
        errors = dict(rows)
        result = SimpleNamespace(table=lambda: "", rows=[name for name, _ in rows], n_labels=int(labels[1]),
                                 errors=lambda method, errors=errors: errors[method])
        cli_module._print_demo(result, tmp_path)   # as the demo ends: its table, then its figure
        # the numbers drawn, recorded in the file: exactly the table printed beside the figure
        shown_numbers = json.loads(Image.open(committed).info["Description"])
        assert shown_numbers == json.loads(Image.open(tmp_path / "results.png").info["Description"]), \
            f"{path} is not what `{command}` draws for the table above it: regenerate it"
        drawn = np.asarray(Image.open(tmp_path / "results.png").convert("L"), dtype=float)
        shown = np.asarray(Image.open(committed).convert("L"), dtype=float)
        assert drawn.shape == shown.shape, path
        # the same picture; some room for another matplotlib's or font's anti-aliasing
        assert np.abs(drawn - shown).mean() < 6.0, f"{path} differs from what `{command}` draws: regenerate it"
