"""Fuzzing the model-file and edit-file readers: random byte flips and truncations of real
(small) files give a clear error (an ``LrgmmError``) or a load that works, never another
exception.

The model is a real ``FacePipeline`` fit and save, on random latents from a tiny registered
backend (no weights, milliseconds), so the file has the exact layout and metadata of a real one
at a size where a flip lands in the JSON metadata or the safetensors header often. Files are
read the ways the commands read them: ``read_metadata`` + the ``info`` text and JSON (``lrgmm
info``), ``FacePipeline.load`` + sampling (``lrgmm sample``), and a few through ``main()``.
Seeded: the same cases every run.
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest
import torch

from lrgmm import autoencoders
from lrgmm.autoencoders.base import Autoencoder
from lrgmm.cli import _info_lines, main
from lrgmm.editing import AttributeEdit, load_edit
from lrgmm.errors import LrgmmError
from lrgmm.io.images import InputReport
from lrgmm.pipeline.encoding import EncodedSet
from lrgmm.io.model_file import read_metadata
from lrgmm.pipeline import FacePipeline

N_TRAIN = 40
RES = 32
SEED = 20261124


class FuzzAE(Autoencoder):
    """6-channel latents at 1/8 of the resolution; decodes to grey (nothing to learn here)."""

    name = "fuzz-tiny"
    weights_sha256 = "f" * 64
    preferred_q = 4

    def __init__(self, **kwargs):
        pass

    def latent_shape(self, resolution):
        if resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8, got {resolution}")
        return (6, resolution // 8, resolution // 8)

    def encode(self, images):
        return torch.zeros(images.shape[0], 6, images.shape[2] // 8, images.shape[3] // 8)

    def decode(self, latents):
        return torch.full((latents.shape[0], 3, latents.shape[2] * 8, latents.shape[3] * 8), 0.5)


@pytest.fixture(scope="module")
def registered():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(autoencoders._FACTORIES, FuzzAE.name, FuzzAE)
        yield


@pytest.fixture(scope="module")
def tiny(registered, tmp_path_factory):
    """(pipeline, model file, edit file) of a tiny model fitted on random latents."""
    ae = FuzzAE()
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(N_TRAIN, 6, RES // 8, RES // 8, generator=g)
    latents[N_TRAIN // 2 :] += 3.0  # two clusters, so both components survive
    # UTKFace-style names (age_gender_race_...), so an edit can be fitted on their labels.
    paths = [f"/photos/{20 + i}_{i % 2}_{i % 4}_2017{i:04d}.jpg.chip.jpg" for i in range(N_TRAIN)]
    hashes = [f"{i:064x}" for i in range(N_TRAIN)]
    encoded = EncodedSet(latents, paths, hashes, InputReport(n_found=N_TRAIN, n_used=N_TRAIN), RES, ae.id)
    pipe = FacePipeline(autoencoder=ae, resolution=RES, n_components=2, patch_size=3, cache=False,
                        progress=False).fit(encoded)
    folder = tmp_path_factory.mktemp("fuzz")
    model = pipe.save(folder / "tiny.lrgmm")
    edit = AttributeEdit(method="gaussian_ot", min_examples=4, progress=False).fit(pipe, attribute="gender")
    return pipe, model, edit.save(folder / "tiny.edit")


def _header_end(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def _cases(data: bytes, n_flips: int, n_header_bits: int, n_cuts: int, seed: int):
    """(description, damaged bytes): flips of 1-3 bytes anywhere or mostly in the header, single
    bit flips in the header (JSON digits and letters change meaning there), and truncations."""
    rng = random.Random(seed)
    end = min(_header_end(data), len(data))
    for i in range(n_flips):
        b = bytearray(data)
        where = []
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(end) if rng.random() < 0.6 else rng.randrange(len(b))
            b[pos] ^= rng.randint(1, 255)
            where.append(pos)
        yield f"flip {i} at {where}", bytes(b)
    for i in range(n_header_bits):
        b = bytearray(data)
        pos = rng.randrange(end)
        b[pos] ^= 1 << rng.randrange(8)
        yield f"bit {i} at {pos}", bytes(b)
    for i in range(n_cuts):
        n = rng.randrange(len(data))
        yield f"cut {i} at {n}", data[:n]


def _open_model(path: Path) -> None:
    """What `lrgmm info` and `lrgmm sample` do with a model file."""
    meta = read_metadata(path)
    _info_lines(meta)
    json.dumps(meta, allow_nan=False)
    pipe = FacePipeline.load(path, progress=False)
    pipe.generate(2, seed=0)
    pipe.model_.sample(2, seed=1, nn=False, temperature=pipe.model_.temperature_ / 2)


def _fuzz(data: bytes, target: Path, open_file, cases) -> tuple[int, int, list[str]]:
    ok = refused = 0
    other = []
    for what, damaged in cases:
        target.write_bytes(damaged)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                open_file(target)
                ok += 1
            except LrgmmError:
                refused += 1
            except Exception as e:  # noqa: BLE001 (what the test is looking for)
                other.append(f"{what}: {type(e).__name__}: {e}")
    return ok, refused, other


def test_model_file_fuzz(tiny, tmp_path):
    _, model, _ = tiny
    data = model.read_bytes()
    _open_model(model)  # the undamaged file loads
    ok, refused, other = _fuzz(data, tmp_path / "f.lrgmm", _open_model, _cases(data, 200, 80, 40, SEED))
    print(f"model fuzz: {ok} loaded, {refused} refused")
    assert other == [], "\n".join(other[:20])
    # The cases reach both outcomes: not all flips land where nothing is checked.
    assert refused >= 150 and ok >= 20, (ok, refused)


def test_edit_file_fuzz(tiny, tmp_path):
    pipe, _, edit_path = tiny
    data = edit_path.read_bytes()
    codes = pipe.model_.codes_[:2]

    def open_edit(path):
        edit = load_edit(path)
        edit.check_model(pipe, path)
        edit.transform(codes, 1.0)
        pipe.edit(codes.shape[0], edit, alphas=(-1.0, 1.0), seed=0)

    open_edit(edit_path)
    ok, refused, other = _fuzz(data, tmp_path / "f.edit", open_edit, _cases(data, 80, 30, 20, SEED + 1))
    print(f"edit fuzz: {ok} loaded, {refused} refused")
    assert other == [], "\n".join(other[:20])
    assert refused >= 50 and ok >= 5, (ok, refused)


def test_damaged_models_through_the_command_line(tiny, tmp_path, capsys):
    _, model, _ = tiny
    data = model.read_bytes()
    target = tmp_path / "f.lrgmm"
    codes = set()
    # One damage that must load: the lowest mantissa bit of the first stored value (the random
    # cases may all land in the JSON header, which is most of this tiny file).
    harmless = bytearray(data)
    harmless[_header_end(data)] ^= 1
    for what, damaged in [("low mantissa bit", bytes(harmless)), *_cases(data, 6, 4, 2, SEED + 2)]:
        target.write_bytes(damaged)
        for argv in (["info", target], ["info", "--json", target],
                     ["sample", target, "-n", 1, "--seed", 0, "-o", tmp_path / "out", "--overwrite", "--quiet"]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rc = main([str(a) for a in argv])
            out, err = capsys.readouterr()
            assert "Traceback" not in err, (what, argv, err)
            assert rc in (0, 2), (what, argv, rc, err)
            if rc == 2:
                assert err.startswith("error: ") and str(target) in err, (what, argv, err)
            elif argv[1] == "--json":
                json.loads(out, parse_constant=lambda c: pytest.fail(f"{what}: {c} in info --json"))
            codes.add(rc)
    assert codes == {0, 2}


def _rewrite_edit(src: Path, dst: Path, meta_change=None, tensor_change=None, raw: str | None = None) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = json.loads(f.metadata()["lrgmm-edit"])
    if meta_change:
        meta_change(meta)
    if tensor_change:
        tensor_change(tensors)
    save_file(tensors, str(dst), metadata={"lrgmm-edit": raw if raw is not None else json.dumps(meta)})
    return dst


BAD_EDITS = {
    "no attribute": (lambda m: m.pop("attribute"), None, r"'attribute' is missing"),
    "model is a list": (lambda m: m.update(model=[1]), None, r"'model' is a list, not an object"),
    "no fingerprint": (lambda m: m["model"].pop("fingerprint"), None, r"'model\.fingerprint' is missing"),
    "unknown method": (lambda m: m["params"].update(method="magic"), None, r"'params\.method' is 'magic', not one of"),
    "negative count": (lambda m: m.update(n_negative=-3), None, r"'n_negative' is -3, expected >= 0"),
    "NaN in the bias": (None, lambda t: t["bias"].view(-1).__setitem__(0, float("nan")), r"'bias' holds 1 NaN"),
    "linear of the wrong size": (None, lambda t: t.update(linear=t["linear"][:2]), r"'linear' has shape \(2, 4\), expected \(4, 4\)"),
    "sides out of range": (None, lambda t: t["memory_side"].__setitem__(0, 7), r"'memory_side' holds values other than -1, 0, 1"),
    "sides of another model": (None, lambda t: t.update(memory_side=t["memory_side"][1:]), r"'memory_side' has shape \(39,\), expected \(40,\)"),
    "left without right": (None, lambda t: t.update(left=torch.zeros(64, 1)), r"'left' or 'right' is missing"),
}


@pytest.mark.parametrize("case", list(BAD_EDITS))
def test_damaged_edit_file_is_named(case, tiny, tmp_path):
    from lrgmm.errors import EditFileError

    meta_change, tensor_change, pattern = BAD_EDITS[case]
    bad = _rewrite_edit(tiny[2], tmp_path / "bad.edit", meta_change, tensor_change)
    with pytest.raises(EditFileError, match=r"bad\.edit: .*" + pattern):
        load_edit(bad)


def test_edit_metadata_that_is_not_an_object(tiny, tmp_path):
    from lrgmm.errors import EditFileError

    bad = _rewrite_edit(tiny[2], tmp_path / "bad.edit", raw="[1, 2]")
    with pytest.raises(EditFileError, match=r"bad\.edit: edit metadata is a JSON list, not an object"):
        load_edit(bad)
