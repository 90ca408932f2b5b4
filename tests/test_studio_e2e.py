"""The studio as a person uses it, in a real headless Chromium (Debian's ``chromium``) driven by
Playwright for Python, against ``lrgmm serve`` started on a free loopback port: load the page, fit
from the shared faces (48 of them), generate, click a face, check that the provenance panel names
real training files and the face's nearest training faces show, hover a latent pixel, download a face and the grid and decode them, change a
control and see the grid redrawn.

A screenshot of each step is written to the test's temporary folder, or to
``$LRGMM_STUDIO_ARTIFACTS`` when set (``scripts/studio_screenshots`` copies them to ``docs/``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
N_FIT = 48

pytestmark = pytest.mark.slow


def wait_until(page, expression: str, timeout: float = 30_000) -> None:
    """Poll a JavaScript expression from the test side until it is truthy. Playwright's own
    ``wait_for_function`` evaluates its predicate with eval inside the page, which the studio's
    Content-Security-Policy (no 'unsafe-eval') forbids, as it should."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout / 1000:.0f} s waiting for: {expression}")
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studio_server(utkface_dir, taef2, tmp_path_factory):
    """``python -m lrgmm serve --data <shared UTKFace>`` on a free loopback port, with a private
    latent cache; stopped after the module."""
    pytest.importorskip("fastapi", reason="the studio extra is not installed: pip install 'lrgmm[studio]'")
    port = _free_port()
    cache = tmp_path_factory.mktemp("studio_cache")
    env = {**os.environ, "LRGMM_CACHE_DIR": str(cache), "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    log = tmp_path_factory.mktemp("studio_log") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lrgmm", "serve", "--data", str(utkface_dir), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(url + "api/status", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"lrgmm serve did not start:\n{log.read_text()}")
            time.sleep(0.3)
    printed = log.read_text()
    assert f"http://127.0.0.1:{port}/" in printed, printed  # the command prints its URL
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed: pip install 'lrgmm[studio-test]'")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path):
    """Screenshot folder: $LRGMM_STUDIO_ARTIFACTS or the test's tmp folder."""
    folder = Path(os.environ.get("LRGMM_STUDIO_ARTIFACTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_fit_generate_inspect_download(studio_server, browser, shots, utkface_dir, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(60_000)

    def shot(name):
        path = shots / f"studio_{name}.png"
        page.wait_for_timeout(400)  # let the faces' fade-in finish
        page.screenshot(path=str(path), full_page=True)
        assert Image.open(path).size[0] == 1400

    # 1. The page loads and lists the data folder; no model yet.
    page.goto(studio_server)
    page.wait_for_selector("#fit-folder option[value='utkface/images']", state="attached")
    assert page.locator("#model-select").input_value() == ""
    assert page.locator("#edit-panel").is_hidden() and page.locator("#complete-panel").is_hidden()
    shot("1_loaded")

    # 2. Fit from 48 shared faces: the progress bar shows while encoding, then the model appears.
    page.fill("#fit-n", str(N_FIT))
    page.click("#fit-button")
    page.wait_for_selector("#fit-progress:not([hidden])")
    wait_until(page, "document.querySelector('#fit-message').textContent.startsWith('done')", timeout=180_000)
    assert page.locator("#fit-progress").evaluate("e => [e.value, e.max]") == [N_FIT, N_FIT]
    assert f"({N_FIT} faces" in page.locator("#model-select option:checked").inner_text()
    shot("2_fitted")

    # 3. The grid fills in (16 faces by default) as the batches are decoded.
    wait_until(page, "document.querySelectorAll('#grid .tile.loaded').length === 16", timeout=120_000)
    assert "16/16 faces decoded" in page.locator("#grid-state").inner_text()
    first_grid = page.locator("#grid .tile").first.get_attribute("data-grid")
    shot("3_grid")

    # 4. Click a face: the large view, its provenance overlay, and the training faces it borrowed
    # from, named by real files of the shared folder, shares adding up to 100 %.
    page.locator("#grid .tile").nth(5).click()
    page.wait_for_selector("#sources li")
    wait_until(page, "document.querySelector('#large-prov').complete && document.querySelector('#large-prov').naturalWidth === 128")
    rows = page.locator("#sources li .src-name")
    assert rows.count() >= 2
    images = (utkface_dir / "images").resolve()
    total = 0.0
    for i in range(rows.count()):
        # The server names files relative to the --data folder, prefixed with its name (never by
        # its absolute path): utkface/images/<file>.jpg
        shown = rows.nth(i).get_attribute("title")
        assert not Path(shown).is_absolute() and shown.startswith(f"{utkface_dir.resolve().name}/"), shown
        full = utkface_dir.resolve().parent / shown
        assert full.parent.resolve() == images and full.is_file(), full
        text = rows.nth(i).inner_text()
        assert full.name in text
        total += float(text.rsplit("—", 1)[1].strip().rstrip("%"))
    assert abs(total - 100) < 0.1 * rows.count()
    thumbs = page.locator("#sources li img")
    thumbs.first.scroll_into_view_if_needed()
    wait_until(page, "document.querySelector('#sources li img').naturalWidth === 64")
    shot("4_face")

    # 5. Hover a latent pixel: which training face and position it came from.
    box = page.locator("#large").bounding_box()
    page.mouse.move(box["x"] + box["width"] * (6.5 / 16), box["y"] + box["height"] * (9.5 / 16))
    info = page.locator("#hover-info").inner_text()
    assert "latent pixel (row 9, col 6)" in info and "training face #" in info, info
    idx = int(info.split("training face #")[1].split(",")[0])
    prov = page.evaluate("S.prov")
    assert prov["map"][9][6] == idx and idx in [s["index"] for s in prov["sources"]]
    assert page.locator(f"#sources li.hot[data-index='{idx}']").count() == 1
    wait_until(page, "document.querySelector('#hover-thumb').naturalWidth === 128")
    shot("5_hover")

    # 6. Downloads: the face and the grid are PNGs that decode; the provenance is JSON.
    for link, size in (("#download-face", (128, 128)), ("#download-grid", (4 * 130 + 2, 4 * 130 + 2))):
        with page.expect_download() as dl:
            page.click(link)
        path = tmp_path / dl.value.suggested_filename
        dl.value.save_as(path)
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == size
            img.convert("RGB").load()
    with page.expect_download() as dl:
        page.click("#download-prov")
    rec = json.loads(Path(dl.value.path()).read_text())
    assert rec["map"] == prov["map"] and rec["face"] == 5

    # 6b. Its 3 nearest training faces in Inception space, beside its sources: the first click
    # started computing the training faces' features (once per model); the list fills in when done.
    wait_until(page, "document.querySelectorAll('#nearest li').length === 3", timeout=180_000)
    assert "Inception space" in page.locator("#nearest-summary").inner_text()
    nearest = page.locator("#nearest li .src-name")
    dists = []
    for i in range(3):
        shown = nearest.nth(i).get_attribute("title")
        assert shown.startswith(f"{utkface_dir.resolve().name}/") and (utkface_dir.resolve().parent / shown).is_file()
        dists.append(float(nearest.nth(i).inner_text().split("— d ")[1].split(" ")[0]))
    assert dists == sorted(dists) and dists[0] > 0
    wait_until(page, "document.querySelector('#nearest li img').naturalWidth === 64")
    shot("6b_nearest")

    # 7. A control change redraws the grid: NN off gives a new grid and no provenance.
    page.uncheck("#nn")
    wait_until(page, 
        f"document.querySelector('#grid .tile').dataset.grid !== '{first_grid}' && "
        "document.querySelectorAll('#grid .tile.loaded').length === 16", timeout=120_000)
    page.locator("#grid .tile").nth(0).click()
    wait_until(page, "document.querySelector('#sources-summary').textContent.includes('no provenance')")
    assert page.locator("#iterations").is_disabled()
    # Back on, lower lambda: the grid is redrawn again.
    page.check("#nn")
    page.locator("#lambda").evaluate("e => { e.value = 0.06; e.dispatchEvent(new Event('input')); }")
    wait_until(page, "document.querySelector('#lambda-out').textContent === '0.06'")
    wait_until(page, "document.querySelectorAll('#grid .tile.loaded').length === 16", timeout=120_000)
    shot("6_controls")
    assert not errors, errors
    context.close()


def test_uploads_in_the_page(studio_server, browser, shots, tmp_path, utkface_dir):
    """A file that only pretends to be an image is refused with the server's message; the page
    and the server stay usable; then real photos are uploaded, fitted and generated from, and the
    provenance names the uploaded files."""
    from conftest import utkface_images

    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(studio_server)
    fake = tmp_path / "face.jpg"
    fake.write_bytes(b"this is not a JPEG" * 50)
    page.set_input_files("#upload-files", str(fake))
    page.click("#upload-button")
    page.wait_for_selector("#toast:not([hidden])")
    msg = page.locator("#toast").inner_text()
    assert "upload refused" in msg and "face.jpg" in msg and "not a readable image" in msg, msg
    shot = shots / "studio_7_bad_upload.png"
    page.screenshot(path=str(shot))
    with urllib.request.urlopen(studio_server + "api/status", timeout=5) as r:
        assert r.status == 200
    photos = utkface_images(utkface_dir)[:: len(utkface_images(utkface_dir)) // 12][:12]
    # The grid on the page before the upload, so that the wait below is for the new model's grid.
    before = page.evaluate("(document.querySelector('#grid .tile') || {dataset: {}}).dataset.grid || ''")
    page.set_input_files("#upload-files", [str(p) for p in photos])
    page.click("#upload-button")
    wait_until(page, "document.querySelector('#fit-message').textContent.startsWith('done')", timeout=120_000)
    assert "upload" in page.locator("#model-select option:checked").inner_text()
    wait_until(page, "(() => { const t = document.querySelectorAll('#grid .tile.loaded'); "
               f"return t.length === 16 && t[0].dataset.grid !== {before!r}; }})()", timeout=120_000)
    page.locator("#grid .tile").first.click()
    page.wait_for_selector("#sources li")
    names = [n.split(" ", 1)[1].rsplit(" —", 1)[0] for n in page.locator("#sources li .src-name").all_inner_texts()]
    assert names and set(names) <= {p.name for p in photos}, names
    page.close()



def test_edit_and_complete_panels(browser, shots, fitted64, faces64_dir, lrgmm_cache, monkeypatch):
    """The edit and complete panels in the page, on the real ``FacePipeline`` (the session's
    model) in an in-process server: edit a face with the alpha slider, drag a box and get
    completions whose provenance names the training faces they borrowed from."""
    pytest.importorskip("fastapi", reason="the studio extra is not installed: pip install 'lrgmm[studio]'")
    pytest.importorskip("geomloss", reason="the edit panel needs GeomLoss: pip install 'lrgmm[edit]'")
    import threading

    import uvicorn

    from lrgmm.pipeline import FacePipeline
    from lrgmm.studio.app import create_app
    from lrgmm.studio.service import Studio

    calls = {}
    real_edit, real_complete = FacePipeline.edit, FacePipeline.complete

    def edit(self, inputs, edit, **kw):  # the real edit, its arguments and result recorded
        out = real_edit(self, inputs, edit, **kw)
        calls["edit"] = ((edit.attribute_, edit.negative_, edit.positive_), kw["alphas"], out)
        return out

    def complete(self, image, mask, **kw):
        out = real_complete(self, image, mask, **kw)
        calls["complete"] = (mask, kw["n"], out)
        return out

    monkeypatch.setattr(FacePipeline, "edit", edit)
    monkeypatch.setattr(FacePipeline, "complete", complete)
    studio = Studio(data=[faces64_dir])
    studio._add_model("faces64", fitted64, "file")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(studio), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "in-process studio server did not start"
        time.sleep(0.05)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_default_timeout(120_000)
        page.goto(f"http://127.0.0.1:{port}/")
        wait_until(page, "document.querySelectorAll('#grid .tile.loaded').length === 16")
        page.locator("#grid .tile").nth(2).click()
        page.wait_for_selector("#sources li")
        assert page.locator("#edit-panel").is_visible() and page.locator("#complete-panel").is_visible()

        # Edit: five alphas in a strip; the slider shows each one in the large view.
        page.select_option("#edit-attribute", "gender")
        page.click("#edit-button")
        wait_until(page, "document.querySelectorAll('#edit-strip .tile.loaded').length === 5", timeout=120_000)
        assert calls["edit"][:2] == (("gender", "male", "female"), (-2.0, -1.0, 0.0, 1.0, 2.0))
        page.locator("#edit-alpha").evaluate("e => { e.value = 4; e.dispatchEvent(new Event('input')); }")
        assert page.locator("#edit-alpha-out").inner_text() == "2"
        edited = page.evaluate("S.edit.faces[4].url")
        assert page.locator("#large-face").get_attribute("src") == edited
        page.wait_for_timeout(400)
        page.screenshot(path=str(shots / "studio_8_edit.png"), full_page=True)

        # Complete: drag a box over the large view (25..75 % across, 30..70 % down).
        page.locator("#large").scroll_into_view_if_needed()
        box = page.locator("#large").bounding_box()
        page.mouse.move(box["x"] + 0.25 * box["width"], box["y"] + 0.30 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.75 * box["width"], box["y"] + 0.70 * box["height"], steps=5)
        page.mouse.up()
        assert page.locator("#mask-box").is_visible() and page.locator("#complete-button").is_enabled()
        page.fill("#complete-n", "3")
        page.click("#complete-button")
        wait_until(page, "document.querySelectorAll('#complete-strip .tile.loaded').length === 3")
        mask, n, out = calls["complete"]
        rows, cols = mask.any(1).nonzero().squeeze(1), mask.any(0).nonzero().squeeze(1)
        x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
        assert abs(x0 - 32) <= 1 and abs(y0 - 38) <= 1 and abs(x1 - 96) <= 1 and abs(y1 - 90) <= 1, (x0, y0, x1, y1)
        assert int(mask.sum()) == (x1 - x0) * (y1 - y0) and n == 3
        # A completion opens in the inspector with its provenance: the training faces of the
        # generated positions, "observed" elsewhere.
        prov = out.samples.provenance[0]
        sources = {Path(fitted64.training_files_[j]).name for j in prov[prov >= 0].tolist()}
        page.locator("#complete-strip .tile").first.click()
        wait_until(page, f"document.querySelectorAll('#sources li').length === {len(sources)}")
        names = page.locator("#sources li .src-name").all_inner_texts()
        assert {n.split(" ", 1)[1].rsplit(" —", 1)[0] for n in names} == sources, names
        page.locator("#large").scroll_into_view_if_needed()
        box = page.locator("#large").bounding_box()
        page.mouse.move(box["x"] + 0.9 * box["width"], box["y"] + 0.9 * box["height"])
        assert int(prov[14, 14]) == -1
        assert "latent pixel (14, 14): observed" in page.locator("#hover-info").inner_text()
        page.mouse.move(box["x"] + 0.53 * box["width"], box["y"] + 0.53 * box["height"])
        j = int(prov[8, 8])
        assert j >= 0 and f"training face #{j}, same position (row 8, col 8)" in page.locator("#hover-info").inner_text()
        page.wait_for_timeout(400)
        page.screenshot(path=str(shots / "studio_9_complete.png"), full_page=True)
        assert not errors, errors
        page.close()
    finally:
        server.should_exit = True
        thread.join(10)
        studio.close()
