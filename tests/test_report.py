"""``python -m experiments.reproduction`` end to end at its ``test`` scale (N = 16, n = 8, one sweep point
each) on the session's 64 real faces (the report fits with TAEF2: it needs the shared folder), into
a temporary folder; and the Pillow line plots."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from lrgmm.baselines import BASELINES
from experiments.reproduction import (SCALES, _against_baseline, _load_note, _more_data_line, _weights, frontier_plot,
                                      line_plot, main)


@pytest.fixture(scope="module")
def inception_file():
    from lrgmm.metrics import MissingExtractorError, find_inception_file

    try:
        return find_inception_file()
    except MissingExtractorError as e:
        pytest.skip(str(e))


@pytest.mark.slow
def test_report_end_to_end(taef2, faces64_dir, faces64_encoded, lrgmm_cache, inception_file, tmp_path):
    out = tmp_path / "reports"
    assert main(["--scale", "test", "--data", str(faces64_dir), "--out", str(out), "--quiet"]) == 0
    md = (out / "reproduction.md").read_text()
    assert "**Scale: `test`.**" in md and f"--scale test --data {faces64_dir} --out {out}" in md
    for cls in BASELINES.values():
        assert f"| {cls.label} |" in md
    assert "re-implementation" in md and "no VGG16" in md and "biased upwards at small n" in md
    for section in ("Table 1 analogue", "Provenance maps", "Decoded centroids", "lambda sweep", "q sweep", "K sweep",
                    "omega sweep", "NN-iteration sweep", "FID against N", "Defaults the sweeps support",
                    "Privacy: the copy budget and copying", "Main comparison (12 faces x 2 seeds per method)",
                    "LR-GMM-NN against the LatentPatch-style baseline"):
        assert section in md, section

    data = json.loads((out / "reproduction.json").read_text())
    assert data["scale"]["name"] == "test"
    split = data["split"]
    assert split["n_reference"] == 16 and split["n_training_pool"] == 64 - SCALES["test"].heldout_reserve
    rows = data["results"]["table"]["16"]
    assert {r["method"] for r in rows} == set(BASELINES) | {"real-photos"}
    for r in rows:
        assert math.isfinite(r["fid"]) and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
        if r["method"] != "real-photos":
            assert r["n"] == 8 and r["N"] == 16 and r["near_copy_inception"] is not None
    priv = data["results"]["privacy"]
    seeds = SCALES["test"].noise_seeds
    assert [r["setting"] for r in priv["rows"]] == (["max_share = 1"] * seeds + ["max_share = 0.5"] * seeds
                                                    + ["LatentPatch-style"] * seeds)
    cap = math.floor(0.5 * 16 * 16)
    for r in priv["rows"]:
        assert r["n"] == SCALES["test"].n_privacy and math.isfinite(r["fid"]) and r["authenticity"] is not None
        if r["max_share"] == 0.5:
            assert r["largest_share_max"] <= cap / 256  # the budget holds on every measured face
    assert [a["setting"] for a in priv["summary"]] == ["max_share = 1", "max_share = 0.5", "LatentPatch-style"]
    # The main comparison: every method x seed, seed means; the privacy section reads the baseline's
    # rows from it (same generator, n and seeds) instead of measuring them again.
    main_ = data["results"]["main"]
    block = main_["by_N"]["16"]
    assert [(r["method"], r["seed"]) for r in block["rows"]] == [(m, s) for m in ("lrgmm-nn", "latentpatch") for s in (1, 2)]
    assert all(r["n"] == 12 and r["near_copy_inception"] is not None for r in block["rows"])  # not the table's 8
    assert [r["sample_ms"] is not None for r in block["rows"]] == [True, False, True, False]  # timed once, warm
    nn = block["summary"][0]
    assert nn["method"] == "lrgmm-nn" and nn["seeds"] == 2
    assert nn["fid"] == pytest.approx((block["rows"][0]["fid"] + block["rows"][1]["fid"]) / 2)
    assert priv["shared_with_main"] == ["LatentPatch-style"]
    lp_priv = [r for r in priv["rows"] if r["setting"] == "LatentPatch-style"]
    assert [r["fid"] for r in lp_priv] == [r["fid"] for r in block["rows"][2:]]
    assert "| C_T | authentic |" in md
    sweeps = data["results"]["sweeps"]
    assert [r["value"] for r in sweeps["q"]] == [8] and 0 < sweeps["q"][0]["psnr"] < sweeps["q"][0]["psnr_autoencoder"]
    assert {(r["value"], r["nn"]) for r in sweeps["lambda"]} == {(0.06, True), (0.06, False)}

    figures = sorted(p.name for p in (out / "figures").iterdir())
    for name in ("samples_all.png", "provenance.png", "centroids.png", "lambda_samples.png", "lambda_curve.png",
                 "q_curve.png", "K_curve.png", "omega_curve.png", "nn_iterations_curve.png", "fid_vs_n.png", "frontier_N16.png",
                 "memorisation_LR-GMM-NN_inception.png", "memorisation_LatentPatch-style_re-implementation_inception.png"):
        assert name in figures
        assert f"figures/{name}" in md
    for name in (f for f in figures if f.endswith(".png")):
        with Image.open(out / "figures" / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100


def test_line_plot_handles_gaps_and_single_points(tmp_path):
    path = line_plot(
        [{"title": "FID", "xlabel": "lambda", "x": [0.01, 0.1, 1.0], "series": {"a": [3.0, None, 1.0], "b": [2.0, 2.0, 2.0]},
          "default": 0.1},
         {"title": "one point", "xlabel": "q", "x": [16], "series": {"a": [float("nan")]}}],
        tmp_path / "plot.png", title="t")
    with Image.open(path) as im:
        assert im.size == (860, 34 + 330 + 28)


@pytest.mark.slow
def test_picture_sweep_end_to_end_and_resumes(taef2, faces64_dir, faces64_encoded, lrgmm_cache, inception_file, tmp_path):
    from experiments import picture_sweep

    out = tmp_path / "reports"
    argv = ["--scale", "test", "--data", str(faces64_dir), "--out", str(out), "--train", "16", "--n", "8",
            "--seeds", "2", "--candidates", "paper", "raster-share25", "latentpatch"]
    assert picture_sweep.main(argv) == 0
    rows = [json.loads(line) for line in (out / "picture.jsonl").read_text().splitlines()]
    assert sorted((r["candidate"], r["seed"]) for r in rows) == sorted(
        (c, s) for c in ("paper", "raster-share25", "latentpatch") for s in (1, 2))
    for r in rows:
        assert r["n"] == 8 and r["N"] == 16 and math.isfinite(r["fid"]) and r["near_copy_inception"] is not None
        if r["candidate"] == "raster-share25":
            assert r["largest_share_max"] <= 0.25  # the budget holds on every measured face
    md = (out / "picture.md").read_text()
    assert "## Verdict" in md and "| raster-share25 | 2 x 8 |" in md and "figures/picture/frontier.png" in md
    for name in ("frontier.png", "grids.png"):
        with Image.open(out / "figures" / "picture" / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    # A rerun measures only what is missing: nothing here.
    assert picture_sweep.main(argv + ["--no-grids"]) == 0
    assert len((out / "picture.jsonl").read_text().splitlines()) == 6


def _nn_table(fid: float, kid: float) -> list[dict]:
    return [{"method": "real-photos", "fid": 60.0, "kid": 0.0}, {"method": "lrgmm-nn", "fid": fid, "kid": kid}]


def test_more_data_line_compares_against_the_seed_spread():
    """The summary's "more data" verdict: better only when FID and KID both fall by more than 2 sqrt 2
    seed sds (a difference of two single-seed measurements)."""
    fit = {1024: {"n_used": 1023, "K": 7, "weights": [0.2]}, 18917: {"n_used": 18917, "K": 62, "weights": [0.026, 0.02]}}
    noise = {"fid_sd": 1.0, "kid_sd": 0.001}
    R = {"sweep_n": 1023, "fit_info": fit, "sweeps": {"noise": noise},  # sweep_n: codes used, as the report stores it
         "table": {1024: _nn_table(80.0, 0.030), 18917: _nn_table(75.0, 0.025)}}
    (line,) = _more_data_line(R)
    assert "FID 75.0 vs 80.0 (-5.0)" in line and "**better beyond the seed spread**" in line
    assert "largest mixture weight 0.026 (K = 62)" in line
    R["table"][18917] = _nn_table(78.0, 0.025)  # FID down by 2 < 2 sqrt 2 = 2.83
    assert "not better beyond the seed spread" in _more_data_line(R)[0]
    R["sweeps"] = {}
    assert _more_data_line(R) == []  # no seed spread, no verdict


def _summary(method, fid, fid_sd, kid, kid_sd, **kw):
    return {"method": method, "label": method, "N": kw.pop("N", 1023), "seeds": 3, "fid": fid, "fid_sd": fid_sd,
            "kid": kid, "kid_sd": kid_sd, "near_copy_inception": 0.03, "largest_share_median": 0.13,
            "precision": 0.65, "recall": 0.35, **kw}


def test_more_data_line_from_the_main_comparison():
    """With a main comparison at two N, the verdict compares seed means against twice the sd of
    their difference (sqrt(sd_a²/3 + sd_b²/3)), not the single-seed table."""
    fit = {1024: {"n_used": 1023, "K": 8, "weights": [0.2]}, 18917: {"n_used": 18917, "K": 62, "weights": [0.026]}}
    small = {"summary": [_summary("lrgmm-nn", 46.0, 0.75, 0.0257, 0.0005)]}
    big = {"summary": [_summary("lrgmm-nn", 40.5, 0.6, 0.0210, 0.0006, N=18917)]}
    R = {"fit_info": fit, "main": {"n": 1000, "seeds": [1, 2, 3], "by_N": {1024: small, 18917: big}}}
    (line,) = _more_data_line(R)
    assert "1,000 faces x 3 seeds" in line and "(-5.50)" in line and "**better beyond the seed spread**" in line
    assert "near copies at N = 18,917: 3 %" in line and "largest mixture weight 0.026 (K = 62)" in line
    tol = 2 * math.sqrt(0.75 ** 2 / 3 + 0.6 ** 2 / 3)
    big["summary"][0]["fid"] = 46.0 - 0.9 * tol  # within the spread on FID
    assert "not better beyond the seed spread" in _more_data_line(R)[0]
    # keys as JSON gives them back (strings) work the same
    R["main"]["by_N"] = {"1024": small, "18917": big}
    R["fit_info"] = {str(k): v for k, v in fit.items()}
    assert "N = 18,917 against N = 1,023" in _more_data_line(R)[0]


def test_against_baseline_needs_every_target():
    lp = _summary("latentpatch", 43.0, 0.8, 0.022, 0.0006)
    nn = _summary("lrgmm-nn", 40.0, 0.5, 0.019, 0.0005)
    ok, text = _against_baseline(nn, lp)
    assert ok and "FID -3.00" in text and "recall 0.350 (≥ 0.3: met)" in text
    ok, text = _against_baseline({**nn, "recall": 0.15}, lp)
    assert not ok and "recall 0.150 (≥ 0.3: not met)" in text
    ok, text = _against_baseline({**nn, "near_copy_inception": 0.06}, lp)
    assert not ok and "near copies 6.0 % (≤ 5 %: not met)" in text
    ok, text = _against_baseline({**nn, "fid": 42.0}, lp)  # 1.0 below, 2 sd = 1.09
    assert not ok and "not lower beyond the spread" in text


def test_frontier_plot_draws_points_and_skips_unmeasured(tmp_path):
    path = frontier_plot([("a", 0.03, 40.0, 0.5), ("b", 0.08, 36.0, None), ("c", None, 30.0, 1.0)], tmp_path / "f.png",
                         title="N = 1023")
    with Image.open(path) as im:
        assert im.size == (900, 540)
        px = im.convert("RGB").load()
        assert any(px[x, y] != (255, 255, 255) for x in range(560, 900) for y in range(60, 120))  # legend drawn
    empty = frontier_plot([("c", None, 30.0, 1.0)], tmp_path / "e.png")
    assert empty.exists()


def test_load_note_blames_other_jobs_only_above_the_runs_own_threads(monkeypatch):
    import os

    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.1, 1.9))
    assert _load_note() == "Load average at the end: 2.0, 2.1, 1.9 (no more than this run's 2 threads: times are comparable)."
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 3.1, 2.4))  # another job during the run
    assert "other jobs shared the CPU" in _load_note()


def test_weights_listing():
    assert _weights([0.5, 0.3, 0.2], show=2) == "0.500, 0.300 and 1 more (0.200 to 0.200)"
    assert _weights([0.6, 0.4]) == "0.600, 0.400" and _weights(None) == "–"


@pytest.mark.slow
def test_privacy_report_smoke(taef2, faces64_dir, faces64_encoded, lrgmm_cache, inception_file, tmp_path):
    """The privacy report alone: the report's table at one N and its privacy section (no main
    comparison at that N: the split must not ask for one)."""
    from experiments import privacy_report

    out = tmp_path / "reports"
    argv = ["--scale", "test", "--data", str(faces64_dir), "--out", str(out), "--train", "16", "--n", "8",
            "--seeds", "2", "--budgets", "1", "0.5"]
    assert privacy_report.main(argv) == 0
    md = (out / "privacy.md").read_text()
    assert "| max_share = 0.5 |" in md and "| LatentPatch-style |" in md
    rows = json.loads((out / "privacy.json").read_text())["privacy"]["rows"]
    assert sorted((r["setting"], r["seed"]) for r in rows) == sorted(
        (s, seed) for s in ("max_share = 1", "max_share = 0.5", "LatentPatch-style") for seed in (1, 2))
    assert all(r["n"] == 8 for r in rows)
