"""Reports rendered from a real ``check`` result: HTML loaded in headless Chromium, Markdown parsed, LaTeX compiled
(or parsed where no TeX engine is installed), figures saved; user strings escaped in every format."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from blindcheck import check
from blindcheck.reporting import ReportData, render, report
from blindcheck.reporting.ci import annotations, write_step_summary
from blindcheck.reporting.escape import github_annotation, md, tex

SCRIPT = "<script>alert(1)</script>"
ODD_ID = "broken_%&<i>x</i>"


@pytest.fixture(scope="module")
def checked(tmp_path_factory, fsdd_meta):
    """A real check of 120 bundled clips (speakers george+jackson vs lucas+nicolas) whose transcripts all carry a
    script tag, plus one undecodable clip whose id holds `_%&` and markup; the manifest's name holds `_%&` too."""
    d = tmp_path_factory.mktemp("report")
    rows = fsdd_meta[fsdd_meta["speaker"].isin(["george", "jackson", "lucas", "nicolas"]) & (fsdd_meta["take"] < 3)]
    rows = rows.groupby("speaker").head(30).reset_index(drop=True)
    assert len(rows) == 120
    bad = d / "broken.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(3000))
    m = pd.DataFrame({"id": [*rows["id"], ODD_ID], "path": [*rows["abspath"], str(bad)],
                      "label": [*rows["speaker"].isin(["george", "jackson"]).astype(int), 1],
                      "speaker": [*rows["speaker"], "george"],
                      "text": [f"{t} {SCRIPT}" for t in [*rows["text"], "zero"]]})
    manifest = d / "mia_split_50%&.csv"
    m.to_csv(manifest, index=False)
    out = d / "out"
    res = check(manifest, out, cache_dir=d / "cache", workers=2, repeats=1, permutations=199,
                modalities=["recording", "spectral"])
    paths = report(out)
    return res, out, paths, manifest, d


def test_html_loads_in_chromium_with_every_section_and_image(checked):
    """No console error, no script, every section and figure rendered at a non-zero size; the transcript's
    script tag shows as text and never runs."""
    pytest.importorskip("websocket")
    from tests.chromium import Page, find_chromium

    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium installed (.ci/run installs Debian's chromium)")
    res, out, paths, _, _ = checked
    html = paths.html.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)  # self-contained
    page = Page(binary)
    try:
        page.load(paths.html.resolve().as_uri())
        info = page.evaluate("""({
            sections: [...document.querySelectorAll('section[id]')].map(s => s.id),
            scripts: document.scripts.length,
            images: [...document.images].map(i => ({w: i.naturalWidth, h: i.naturalHeight, done: i.complete,
                     rw: i.getBoundingClientRect().width, rh: i.getBoundingClientRect().height,
                     fig: i.closest('figure').id})),
            text: document.body.innerText,
            codes: [...document.querySelectorAll('td code')].map(c => c.textContent),
            criteria: Object.fromEntries([...document.querySelectorAll('#table-criteria tr[data-key]')].map(
                r => [r.dataset.key, [...r.cells].map(c => c.innerText)])),
            models: [...document.querySelectorAll('#table-models tr[data-key]')].map(
                r => [...r.cells].map(c => c.innerText)),
            swatches: Object.fromEntries([...document.querySelectorAll('#table-models tr[data-key]')].map(
                r => [r.dataset.key, getComputedStyle(r.querySelector('.sw')).backgroundColor]))})""")
        page.screenshot(out / "report_screenshot.png")
        problems = page.problems()
    finally:
        page.close()
    assert problems == []
    assert info["scripts"] == 0
    assert info["sections"] == ["verdict", "criteria", "evidence", "features", "speakers", "clips",
                                "data", "next", "reproduce"]
    # every criterion the verdict names, and every condition of a clean verdict, has its value and bound
    verdict = json.loads((out / "result.json").read_text())["verdict"]
    assert verdict["criteria"] and set(verdict["criteria"]) | {"clean-auc", "clean-subset"} <= set(info["criteria"])
    for key in [*verdict["criteria"], "clean-auc", "clean-subset", "failures"]:
        _name, value, bound, threshold, result = info["criteria"][key]
        assert re.search(r"\d", value) and re.search(r"\d", bound) and re.search(r"\d", threshold), (key, value)
        assert result.startswith("met") == (key in verdict["criteria"]), (key, result)
    assert info["criteria"]["auc"][2].startswith(f"lower {min(verdict['lower_bound'], 1):.2f}")
    assert_numbers_readable(info["text"])
    # the models table's key: each model's swatch is the colour its curves and points have in every figure
    from blindcheck.reporting.plots import model_colours

    colours = model_colours(json.loads((out / "result.json").read_text()))
    rgb = {k: "rgb({}, {}, {})".format(*(int(c[i:i + 2], 16) for i in (1, 3, 5))) for k, c in colours.items()}
    assert info["swatches"] == {m.name: rgb[m.name] for m in res.separability.models}
    for row in info["models"]:  # AUC, its interval and the shares: inside [0, 1]
        aucs = [float(x) for x in re.findall(r"\d+\.\d+", " ".join(row[3:5]))]
        shares = [float(x) for x in re.findall(r"(\d+(?:\.\d+)?)%", " ".join(row[5:8]))]
        assert all(0 <= a <= 1 for a in aucs) and len(aucs) == 3 and all(0 <= x <= 100 for x in shares), row
    figs = {i["fig"] for i in info["images"]}
    assert figs == {"fig-roc", "fig-auc", "fig-top_features", "fig-attribution", "fig-overview"}
    assert all(i["done"] and i["w"] > 100 and i["h"] > 100 and i["rw"] > 100 and i["rh"] > 50
               for i in info["images"]), info["images"]
    assert SCRIPT in info["text"]  # the transcript, shown as text
    assert ODD_ID in info["codes"] or ODD_ID in info["text"]  # the failed clip's id, in the errors table
    assert "mia_split_50%&.csv" in info["text"]
    assert res.status.upper() in info["text"]
    assert (out / "report_screenshot.png").stat().st_size > 20_000


def assert_numbers_readable(text: str) -> None:
    """No decimal number prints more than four significant digits (versions and dates aside)."""
    for m in re.finditer(r"(?<![\w.:-])-?(\d+\.\d+)(?:e[-+]?\d+)?(?![\w.])", text):
        digits = m.group(1).replace(".", "").lstrip("0")
        assert len(digits) <= 4, (m.group(0), text[max(m.start() - 80, 0):m.end() + 20])


def test_markdown_escapes_user_strings(checked):
    from markdown_it import MarkdownIt

    res, out, paths, _, _ = checked
    text = paths.md.read_text()
    assert text.startswith(f"## blindcheck: **{res.status.upper()}**")
    assert "mia\\_split\\_50%&amp;.csv" in text
    rendered = MarkdownIt("commonmark").enable("table").render(text)
    assert "<script" not in rendered.lower()
    # one table row per model, with its AUC as check computed it
    for mr in res.separability.models:
        assert re.search(rf"\| {re.escape(md(mr.name))} \| {mr.modality} \| \d+ \| {mr.auc:.2f} \|", text), mr.name
    assert "Seed 0" in text and "blindcheck check" in text
    # the same sections as the HTML, in the same order; one style of text, no runs of blank lines
    html = paths.html.read_text()
    titles = re.findall(r"<h[23]>([^<]+)</h[23]>", html)
    assert re.findall(r"^### (.+)$", text, re.M) == [md(t).replace("&amp;", "&") for t in titles]
    assert "&#64;" not in text and "\n\n\n" not in text and not re.search(r"; $", text, re.M)
    rows = {"auc": "AUC: best model", "subset": "isolated subset", "failures": "clips that failed",
            "speakers": "speakers: who speaks", "metadata": "manifest attributes"}
    for key in res.verdict.criteria:  # each criterion met has its row, value and bound included
        cells = r"[^|]* \| [^|]*\d[^|]* \| [^|]*\d[^|]* \| .* \| met: confounded \|$"
        assert re.search(rf"^\| {re.escape(rows[key])}{cells}", text, re.M), key
    assert_numbers_readable(text)


def test_latex_table_escapes_and_compiles(checked):
    res, out, paths, manifest, d = checked
    body = paths.tex.read_text()
    assert "mia\\_split\\_50\\%\\&.csv" in body
    tables = {t.split("\\label{")[1].split("}")[0]: t for t in body.split("\\begin{table}")[1:]}
    assert set(tables) == {"tab:blindcheck", "tab:blindcheck-criteria"}
    rows = [r for r in tables["tab:blindcheck"].split("\\midrule")[1].split("\\bottomrule")[0].strip().split("\\\\")
            if r.strip()]
    assert len(rows) == len(res.separability.models)
    for r in rows:  # every row has the 7 columns of the tabular spec: 6 unescaped '&'
        assert len(re.findall(r"(?<!\\)&", r)) == 6, r
    crit = tables["tab:blindcheck-criteria"]
    assert all(f" & {'met' if k in res.verdict.criteria else 'not met'} \\\\" in crit
               for k in ("auc", "subset") if k in res.verdict.criteria)
    assert "5-fold cross-validation $\\times$ 1" in tables["tab:blindcheck"]  # folds x repeats, as run
    assert body.count("{") - body.count("\\{") == body.count("}") - body.count("\\}")
    text = "\n".join(ln.removesuffix("}%") for ln in body.splitlines() if not ln.startswith("%"))
    assert not re.search(r"(?<!\\)[%_#&]", re.sub(r"\$[^$]*\$", "", text).replace("&", "").replace("\\&", ""))
    engine = shutil.which("pdflatex")
    if engine is None or subprocess.run(["kpsewhich", "booktabs.sty"], capture_output=True).returncode != 0:
        pytest.skip("no pdflatex with booktabs here: the table was checked by parsing only")
    doc = d / "doc.tex"
    doc.write_text("\\documentclass{article}\\usepackage[T1]{fontenc}\\usepackage{booktabs}\\usepackage{graphicx}"
                   f"\\begin{{document}}\\input{{{paths.tex.as_posix()}}}\\end{{document}}\n")
    r = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=d,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]
    assert (d / "doc.pdf").stat().st_size > 1000
    log = (d / "doc.log").read_text(errors="replace")
    assert "Overfull" not in log and "Missing character" not in log, log[-3000:]


def test_figures_saved_as_png_and_pdf(checked):
    _, out, paths, _, _ = checked
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert names == sorted(f"{n}.{e}" for n in ("roc", "auc", "top_features", "attribution", "overview")
                           for e in ("png", "pdf"))
    for p in (out / "figures").iterdir():
        head = p.read_bytes()[:8]
        assert head.startswith(b"%PDF" if p.suffix == ".pdf" else b"\x89PNG"), p
        assert p.stat().st_size > 5000


def test_optional_sections_render_when_present_and_are_skipped_when_misshapen(checked, tmp_path):
    """attacks / di / match: a small hand-made section of the documented shape (a fixture of the shape, not a
    result) renders its tables and figures; a differently-shaped one is left out without error."""
    _, out, _, _, _ = checked
    d = ReportData.from_dir(out)
    rng = np.random.default_rng(1)
    scores = d.scores
    d.attack_scores = pd.DataFrame({"id": scores["id"], "label": scores["label"], "blind_score": scores["blind_score"],
                                    "attack.loss_a_b": scores["blind_score"] + rng.normal(0, 0.1, len(scores))})
    d.result["attacks"] = [{"name": "loss_a_b", "direction": "lower", "n": len(scores), "auc": 0.81,
                            "ci_low": 0.74, "ci_high": 0.88, "tpr_at_1pct_fpr": 0.12, "tpr_at_01pct_fpr": 0.02,
                            "blind_auc": 0.97, "delong_p": 0.0004, "spearman": {"value": 0.66, "ci_low": 0.5,
                                                                                "ci_high": 0.75},
                            "residual_auc": {"value": 0.52, "ci_low": 0.45, "ci_high": 0.6}, "status": "explained",
                            "reasons": [f"attack tracks the blind score {SCRIPT}"]}]
    d.result["di"] = {"alpha": 0.05, "minimal_n": {"attack": 40, "blind": 10},
                      "curves": {"attack": [{"n": n, "rate": r} for n, r in ((10, 0.1), (40, 0.8), (160, 1.0))],
                                 "blind": [{"n": n, "rate": r} for n, r in ((10, 0.9), (40, 1.0), (160, 1.0))]}}
    d.result["match"] = {"method": "nearest-neighbour", "status": "matched",
                         "before": {"auc": 0.97, "ci_low": 0.95, "ci_high": 0.99},
                         "after": {"auc": 0.55, "ci_low": 0.45, "ci_high": 0.65},
                         "retained": {"members": 40, "nonmembers": 40}, "command": "blindcheck match m.csv --out x",
                         "balance": [{"feature": "recording.rms_dbfs", "smd_before": 2.1, "smd_after": 0.05,
                                      "variance_ratio": 1.1}]}
    p = render(d, tmp_path / "full")
    html = p.html.read_text()
    for needle in ('id="attacks"', 'id="di"', "loss_a_b", "0.66 [0.50, 0.75]", "0.55 [0.45, 0.65]",
                   "blindcheck match m.csv --out x", 'id="fig-attacks"', 'id="fig-di"', 'id="fig-love"'):
        assert needle in html, needle
    assert SCRIPT not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "loss\\_a\\_b" in p.tex.read_text() and "| loss\\_a\\_b |" in p.md.read_text()
    assert {f.name for f in (tmp_path / "full" / "figures").glob("*.png")} >= {"attacks.png", "di.png", "love.png"}

    d.result["attacks"], d.result["di"], d.result["match"] = {"weird": 1}, {"minimal_n": 3}, [1, 2]
    p = render(d, tmp_path / "odd", formats=("html", "md"), figures=False)
    html = p.html.read_text()
    assert 'id="attacks"' not in html and 'id="di"' not in html and "Matched subset" not in html


def test_dataset_inference_section_as_the_verb_writes_it(checked, tmp_path):
    """The di section exactly as ``blindcheck di`` writes it (a real DIResult on real blind scores) renders its
    minimal-n table and rejection curves."""
    from blindcheck.analysis.inference import dataset_inference
    from blindcheck.settings import Settings

    _, out, _, _, _ = checked
    d = ReportData.from_dir(out)
    y = d.scores["label"].to_numpy()
    rng = np.random.default_rng(3)
    attack = y + rng.normal(0, 1.5, len(y))  # a genuine shift: DI rejects at some n
    res = dataset_inference({"mia_x": attack}, y, Settings(di_resamples=50, di_grid=8),
                            blind_score=d.scores["blind_score"].to_numpy())
    d.result["di"] = json.loads(json.dumps(res.to_dict()))
    p = render(d, tmp_path / "di", formats=("html", "md"))
    md = p.md.read_text()
    n_min = res.attack.n_min
    assert f"| mia\\_x | {n_min if n_min is not None else 'not reached'} |" in md, md
    assert "| blind |" in md and 'id="fig-di"' in p.html.read_text()


def test_cli_report_and_gate_for_github(checked, tmp_path):
    res, out, _, manifest, d = checked
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "blindcheck", *map(str, a)],  # noqa: E731
                                          capture_output=True, text=True, cwd=d, **kw)
    r = run("report", out, "--formats", "md,tex", "--no-figures")
    assert r.returncode == 0 and "report.md" in r.stdout, r.stderr
    r = run("report", tmp_path / "nothing")
    assert r.returncode == 2 and "no result.json" in r.stderr and "Traceback" not in r.stderr
    summary = tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    gate_out = tmp_path / "gate"
    r = run("gate", manifest.name, "--out", gate_out, "--cache-dir", d / "cache", "--workers", "1", "--repeats", "1",
            "--permutations", "199", "--modalities", "recording,spectral", "--no-config", "--format", "github",
            env=env)
    assert r.returncode == {"clean": 0, "confounded": 1, "inconclusive": 3}[res.status], r.stderr
    lines = r.stdout.strip().splitlines()
    assert json.loads(lines[0])["verdict"] == res.status
    level = {"clean": "notice", "confounded": "error", "inconclusive": "warning"}[res.status]
    assert lines[1].startswith(f"::{level} file=mia_split_50%25&.csv,title=blindcheck%3A {res.status}::")
    assert summary.read_text().startswith(f"## blindcheck: **{res.status.upper()}**")
    # the folder a workflow uploads holds the reports; progress went to stderr as plain lines, stdout stays parseable
    assert (gate_out / "report.md").read_text().startswith(f"## blindcheck: **{res.status.upper()}**")
    assert (gate_out / "report.html").is_file() and (gate_out / "figures" / "auc.png").is_file()
    assert "blindcheck: report: writing report.html" in r.stderr and "blindcheck: extracting" in r.stderr


def test_escaping_functions():
    s = "a_b%c&d $x$ #1 {y} ~^\\ <b>|@bob"
    assert tex(s) == ("a\\_b\\%c\\&d \\$x\\$ \\#1 \\{y\\} \\textasciitilde{}\\textasciicircum{}\\textbackslash{} "
                      "\\textless{}b\\textgreater{}\\textbar{}@bob")
    assert md(s) == "a\\_b%c&amp;d $x$ #1 \\{y\\} \\~^\\\\ &lt;b>\\|&#64;bob"
    assert md("# x") == "\\# x" and md("- x") == "\\- x" and md("-1.5") == "-1.5" and md("1.00") == "1.00"
    assert github_annotation("50%\nnext") == "50%25%0Anext"
    assert github_annotation("a:b,c", prop=True) == "a%3Ab%2Cc"


def test_gate_summary_and_annotations_without_output_dir(checked, tmp_path, monkeypatch):
    res, _, _, _, _ = checked
    saved = res.to_dict()
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert write_step_summary(saved) is None
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "s.md"))
    write_step_summary(saved)
    write_step_summary(saved)  # appends, as GitHub expects from several steps
    assert (tmp_path / "s.md").read_text().count("## blindcheck:") == 2
    lines = annotations(saved)
    assert len(lines) == len(saved["verdict"]["reasons"]) and all("\n" not in x for x in lines)


def test_equivalent_command_echoes_every_check_setting_and_parses_back():
    """Every Settings field that ``blindcheck check`` has a flag for is in the report's equivalent command, with
    that flag's spelling; a result whose settings differ from the defaults in each of them gives a command that the
    CLI's own parser reads back to the same settings (so the set cannot drift from the CLI again)."""
    import dataclasses

    from blindcheck import cli
    from blindcheck.reporting.sections import _CLI_SETTINGS, _equivalent_command
    from blindcheck.settings import Settings

    parser = cli.build_parser()
    check_parser = parser._subparsers._group_actions[0].choices["check"]
    flags = {a.dest: a.option_strings for a in check_parser._actions}
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert set(cli.SETTINGS_FLAGS) <= fields
    on_check = {k for k, dest in cli.SETTINGS_FLAGS.items() if dest in flags}
    assert {"voice_cluster_threshold", "metadata_permutations", "metadata_ignore"} <= on_check
    assert set(_CLI_SETTINGS) == on_check
    for k in on_check:
        assert _CLI_SETTINGS[k] in flags[cli.SETTINGS_FLAGS[k]], k
    # every flag of the check's settings group maps to a Settings field
    group = next(g for g in check_parser._action_groups if g.title.startswith("blind classifier"))
    dests = {a.dest for a in group._group_actions} - {"config", "no_config"}
    assert dests <= set(cli.SETTINGS_FLAGS.values()), dests - set(cli.SETTINGS_FLAGS.values())

    changed = Settings(group_by="speaker", folds=3, repeats=2, seed=7, alpha=0.01, tolerated_auc=0.65,
                       tolerated_share=0.2, power=0.9, permutations=999, refit_permutations=199, refit_repeats=2,
                       bootstrap=500, voice_cluster_threshold=0.75, metadata_permutations=499,
                       metadata_ignore=("split", "batch"))
    default = Settings().to_dict()
    assert all(changed.to_dict()[k] != default[k] for k in on_check)
    settings = json.loads(json.dumps(changed.to_dict()))  # as result.json holds them (tuples become lists)
    cmd = _equivalent_command(ReportData(result={"settings": settings, "manifest": {"source": "m.csv"}}, out="o"))
    for k in on_check:
        assert _CLI_SETTINGS[k] in cmd, k
    import shlex

    args = parser.parse_args(shlex.split(cmd)[1:] + ["--no-config"])
    assert cli._settings(args) == changed
