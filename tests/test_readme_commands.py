"""The README's commands still work: every ``lrgmm ...`` line of its ```bash blocks parses with
the real argument parser, and the Tour runs end to end (slow) on shared faces.

Parsing is the floor: a renamed option, or one that swallows the next argument (``--alpha``
took the photos after it), fails here before a reader meets it. Most README commands need files
that only a reader has (photo.jpg, gender.edit); the Tour needs only a folder of faces, so it runs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import REAL_DATA, REPO_ROOT

from lrgmm.cli import build_parser, main

README = REPO_ROOT / "README.md"


def bash_blocks(text: str) -> list[tuple[str, str]]:
    """(heading above the block, block text) for every ```bash block."""
    blocks, heading = [], ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = lines[i].lstrip("#").strip()
        if lines[i].strip() == "```bash":
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            blocks.append((heading, "\n".join(lines[i + 1 : j])))
            i = j
        i += 1
    return blocks


def lrgmm_commands(block: str) -> list[list[str]]:
    """The arguments of every ``lrgmm`` invocation in a block (also ``.venv/bin/lrgmm`` after
    ``&&``), comments stripped."""
    commands = []
    for line in block.splitlines():
        tokens = shlex.split(line, comments=True)
        segment: list[str] = []
        for tok in tokens + ["&&"]:
            if tok in ("&&", "||", ";", "|"):
                if segment and Path(segment[0]).name == "lrgmm":
                    commands.append(segment[1:])
                segment = []
            else:
                segment.append(tok)
    return commands


COMMANDS = [(heading, cmd) for heading, block in bash_blocks(README.read_text()) for cmd in lrgmm_commands(block)]


def test_the_readme_has_commands():
    """The extraction itself: an empty list would make the test below pass vacuously."""
    assert len(COMMANDS) >= 15, COMMANDS
    names = {cmd[0] for _, cmd in COMMANDS}
    assert {"fit", "sample", "info", "eval", "complete", "edit-fit", "edit", "serve", "demo"} <= names


@pytest.mark.parametrize("heading, argv", COMMANDS, ids=[" ".join(c) for _, c in COMMANDS])
def test_readme_command_parses(heading, argv, capsys):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:  # argparse's way of failing
        pytest.fail(f"README ({heading}): `lrgmm {' '.join(argv)}` does not parse:\n{capsys.readouterr().err}")
    # Every file named on the line reached the command as itself (not swallowed by an option).
    for tok in argv:
        if re.search(r"\.(jpg|png|lrgmm|edit|csv|ckpt|yaml)$", tok):
            assert any(tok == v or (isinstance(v, list) and tok in v) for v in vars(args).values()), (tok, args)


def test_readme_edit_command_takes_the_photos_after_alpha():
    args = build_parser().parse_args(
        shlex.split("edit faces.lrgmm gender.edit --alpha -2 -1 0 1 2 photo1.jpg photo2.jpg -o out/"))
    assert args.alpha == [-2, -1, 0, 1, 2] and args.images == ["photo1.jpg", "photo2.jpg"] and args.output == "out/"
    # The other orders still work, and a bad alpha is still reported as one.
    for line in ("edit m e a.jpg b.jpg --alpha -1 1 -o o", "edit m e --alpha -1 1 -o o a.jpg b.jpg",
                 "edit m e -o o --alpha -1 1 a.jpg b.jpg", "edit m e --alpha=-1 a.jpg b.jpg -o o"):
        args = build_parser().parse_args(shlex.split(line))
        assert args.images == ["a.jpg", "b.jpg"] and args.alpha in ([-1.0, 1.0], [-1.0]), line
    with pytest.raises(SystemExit):
        build_parser().parse_args(shlex.split("edit m e --alpha x a.jpg -o o"))


@pytest.mark.slow
def test_readme_tour_runs(faces64, faces64_encoded, tmp_path, monkeypatch, capsys, lrgmm_cache):
    """The Tour block as written, in a fresh folder, with ``photos/`` holding 48 of the session's
    faces (their latents are in the session cache: seconds, not minutes). Without the shared
    folder, ``lrgmm fit`` gets ``--autoencoder fake`` (no TAEF2 weights)."""
    tour = [block for heading, block in bash_blocks(README.read_text()) if heading == "Tour"]
    assert len(tour) == 1
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in faces64[:48]:
        (photos / p.name).symlink_to(p)
    monkeypatch.chdir(tmp_path)
    commands = lrgmm_commands(tour[0])
    assert [c[0] for c in commands] == ["fit", "sample", "info", "sample"]
    outputs = []
    for argv in commands:
        extra = (["--quiet"] if argv[0] in ("fit", "sample") else []) + (
            ["--autoencoder", "fake"] if argv[0] == "fit" and not REAL_DATA else [])
        rc = main(argv + extra)
        out, err = capsys.readouterr()
        assert rc == 0, f"lrgmm {' '.join(argv)}: {err}"
        outputs.append(out)
    assert "48 of 48 image file(s) used" in outputs[0] and "model written to faces.lrgmm" in outputs[0]
    assert "training images  48" in outputs[2]
    assert len(list((tmp_path / "out").glob("face_????.png"))) == 64
    assert len(list((tmp_path / "out").glob("face_????_provenance.json"))) == 64
    assert len(list((tmp_path / "plain").glob("face_????.png"))) == 16
    assert not list((tmp_path / "plain").glob("*provenance*"))  # --no-nn: nothing copied
