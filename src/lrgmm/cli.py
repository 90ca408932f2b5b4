"""Command line: a thin layer over the Python API.

Every option's default is read from the signature of the API function it feeds
(``FacePipeline.__init__``, ``FacePipeline.generate``, ``run_demo``...), so the command line and
the library cannot drift apart.

Inputs are checked before any work: counts, NN iterations and seeds against ``lrgmm.limits``,
output paths that are empty, output folders that already hold files (``--overwrite`` replaces
lrgmm's own files there and nothing else: ``lrgmm.io.output_folder``). ``--alpha`` takes the
numbers that follow it, so photos may come after it (``lrgmm edit m e --alpha -1 1 a.jpg``).

Errors: the package's own (``lrgmm.errors.LrgmmError``: bad input, exit status 2) and the
system's (``OSError``: disk full, permission denied; exit status 1) are printed as one line. Any
other exception is a bug in lrgmm and shows its traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import warnings
from pathlib import Path

from ._version import __version__
from .defaults import NN_ORDERS
from .errors import LrgmmError, ParameterError
from .core.randomness import resolve_seed
from .limits import MAX_SAMPLES, SEED_LIMIT, check_nn_iterations


def _default(func, name):
    return inspect.signature(func).parameters[name].default


def _opt(parser, func, name, *flags, help, **kw):
    """Add ``--name`` (plus ``flags``) with its default taken from ``func``'s signature."""
    default = _default(func, name)
    flags = flags or (f"--{name.replace('_', '-')}",)
    parser.add_argument(*flags, dest=name, default=default, help=f"{help} (default: {default})", **kw)


def _add_model_options(p):
    from .pipeline.face_pipeline import FacePipeline

    init = FacePipeline.__init__
    _opt(p, init, "autoencoder", help="autoencoder backend (see `lrgmm autoencoders`)")
    _opt(p, init, "resolution", type=int, help="working image side in pixels")
    _opt(p, init, "n_channels", "-q", "--n-channels", type=int, help="projector channels q; default: the autoencoder's preferred q")
    _opt(p, init, "n_components", "-K", "--n-components", type=_positive_int, help="mixture components K; default: round(N / 128) in [1, 128]")
    _opt(p, init, "temperature", "--temperature", "--lambda", type=_lambda, help="lambda in (0, 1]: d_k = floor(lambda * pi_k * d0); "
         "the paper's is 0.12")
    _opt(p, init, "spread", "--spread", "--psi", type=_spread, help="psi > 0: every draw's deviation from its "
         "component's mean is scaled by psi before the NN step; the paper's is 1")
    _opt(p, init, "patch_size", "--patch-size", "--omega", type=int, help="NN patch size omega (odd)")
    _opt(p, init, "nn_iterations", type=int, help="NN projections per sample")
    _opt(p, init, "nn_order", choices=NN_ORDERS, help="how the NN step visits the positions: parallel (eq. 5 as "
         "printed) or raster (one by one, each patch read from the face as it stands)")
    _opt(p, init, "max_share", type=_max_share, help="copy budget stored as the model's default: no face takes more "
         "than this share of its latent pixels from one training photo, in (0, 1]; 1: no budget")
    _opt(p, init, "density_rank", type=_non_negative_int, help="rank of every component's density during EM (eq. 4's d_k is for sampling)")
    _opt(p, init, "reg_covar", type=_positive_float, help="floor of the components' isotropic variance")
    _opt(p, init, "max_iter", type=int, help="maximum EM iterations")
    _opt(p, init, "tol", type=float, help="EM tolerance on the mean log-likelihood")
    _opt(p, init, "n_init", type=_positive_int, help="k-means++ starts of EM; the most likely fit is kept")
    _opt(p, init, "random_state", "--seed", type=_seed, help="seed of the EM initialisation")
    _opt(p, init, "min_component_size", type=int, help="components with fewer training images are removed")
    _opt(p, init, "batch_size", type=int, help="images per encoder/decoder batch")


def _add_backend_options(p):
    """Where the autoencoder's files are (vqgan, diffusers; TAEF2's weights are found by itself)."""
    g = p.add_argument_group("autoencoder files", "for --autoencoder vqgan / diffusers (see `lrgmm autoencoders`)")
    g.add_argument("--ae-weights", default=None, help="TAEF2 weights folder, VQGAN checkpoint, or diffusers model folder")
    g.add_argument("--ae-config", default=None, help="VQGAN YAML config (taming-transformers layout)")
    g.add_argument("--ae-subfolder", default=None, help="diffusers: subfolder of the model folder holding the VAE")
    g.add_argument("--requantize", action=argparse.BooleanOptionalAction, default=None,
                   help="VQGAN: snap latents to the codebook before decoding (recorded in the model)")


def _add_precision_option(p, func=None):
    """``--precision`` with its default from ``func``'s signature (default: ``FacePipeline``)."""
    from .autoencoders.precision import PRECISIONS
    from .pipeline.face_pipeline import FacePipeline

    _opt(p, func or FacePipeline.__init__, "precision", choices=PRECISIONS,
         help="the autoencoder's arithmetic: fp32, bf16, or auto (bf16 where the CPU/GPU has it natively: "
              "AVX-512 BF16 or AMX; on other CPUs bf16 is emulated and slow)")


def _autoencoder_arg(args, options: dict):
    """What ``FacePipeline(autoencoder=)`` gets: the backend's name, or the backend built here when
    the command line gave it files or options (``--ae-weights`` ...)."""
    if not options:
        return args.autoencoder
    from .autoencoders import get_autoencoder

    return get_autoencoder(args.autoencoder, batch_size=args.batch_size, precision=args.precision, **options)


def _backend_options(name: str, args) -> dict:
    from .autoencoders import backend_options

    return backend_options(
        name, weights=args.ae_weights, config=args.ae_config, subfolder=args.ae_subfolder, requantize=args.requantize
    )


def _add_sampling_options(p, n_default=16):
    from .pipeline.face_pipeline import FacePipeline

    gen = FacePipeline.generate
    p.add_argument("-n", "--n", type=_face_count, default=n_default,
                   help=f"number of faces, at most {MAX_SAMPLES:,} (default: {n_default})")
    p.add_argument("--seed", type=_seed, default=None, help="seed; default: a fresh one, printed so the run can be repeated")
    p.add_argument("--no-nn", dest="nn", action="store_false", default=_default(gen, "nn"), help="skip the NN step (the paper's plain LR-GMM)")
    p.add_argument("--temperature", "--lambda", type=_lambda, default=None, help="lower lambda than the fitted one (default: the model's)")
    p.add_argument("--spread", "--psi", type=_spread, default=None,
                   help="psi > 0, the scale of each draw around its component's mean (default: the model's)")
    p.add_argument("--nn-iterations", type=int, default=None, help="NN projections per sample (default: the model's)")
    p.add_argument("--patch-size", "--omega", type=int, default=None, help="NN patch size (default: the model's)")
    p.add_argument("--nn-order", choices=NN_ORDERS, default=None,
                   help="how the NN step visits the positions: parallel or raster (default: the model's)")
    _add_max_share_option(p, gen)


def _add_max_share_option(p, func) -> None:
    p.add_argument("--max-share", type=_max_share, default=_default(func, "max_share"),
                   help="copy budget: no face takes more than this share of its latent pixels from one training "
                        "photo, in (0, 1], e.g. 0.25 (default: the model's; 1 = no budget)")


def _edit_defaults() -> dict:
    from .pipeline.face_pipeline import FacePipeline

    return {n: _default(FacePipeline.edit, n) for n in ("alphas", "nn")}


def _add_method_option(p):
    from .baselines import BASELINES

    p.add_argument("--method", choices=list(BASELINES), default=None,
                   help="generate with a baseline of the reproduction report instead of the model's LR-GMM-NN "
                        "(lrgmm = --no-nn); fitted on the model's training codes")


def _baseline(name: str, pipe):
    from .baselines import make_generator

    return make_generator(name, pipe)


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _non_negative_int(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {n}")
    return n


def _positive_float(text: str) -> float:
    x = float(text)
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return x


def _lambda(text: str) -> float:
    """``--temperature``: a finite number in (0, 1] (``inf`` used to overflow to rank 1)."""
    from .core.model import check_temperature

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}") from None
    try:
        return check_temperature(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number in (0, 1], got {text}") from None


def _spread(text: str) -> float:
    """``--spread``: a finite number > 0."""
    from .core.model import check_spread

    try:
        return check_spread(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None


def _max_share(text: str) -> float:
    """``--max-share``: a finite number in (0, 1]."""
    from .core.nn_projection import check_max_share

    try:
        return check_max_share(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}") from None


def _face_count(text: str) -> int:
    """-n of the commands that generate faces: 1 .. MAX_SAMPLES."""
    n = _positive_int(text)
    if n > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SAMPLES:,} faces, got {n:,}")
    return n


def _check_count(text: str) -> int:
    """--check-faces: 0 .. MAX_SAMPLES."""
    if text.strip() in ("0", "+0"):
        return 0
    return _face_count(text)


def _seed(text: str) -> int:
    """--seed: an integer in [0, 2**63), the range every generator here and the studio accept."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63 - 1], got {text!r}") from None
    if not 0 <= seed < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63 - 1 = {SEED_LIMIT - 1}], got {seed}")
    return seed


def _output_path(text: str) -> str:
    """-o: a file or folder name; '' (an unset shell variable, a stray quote) is refused here
    instead of reaching the file system as the current folder or an odd OS error."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the output path is empty: give a file or folder name")
    return text


def _add_overwrite_option(p) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty output folder, replacing lrgmm's own files there (others are kept)")


def _info_lines(meta: dict) -> list[str]:
    """What a model holds, from its metadata alone (no weights or tensors needed)."""
    fit, hp, counts = meta["fit"], meta["hyperparameters"], meta["parameter_counts"]
    q, K = hp["n_channels"], hp["n_components"]
    c, h, w = meta["latent_shape"]
    mix = counts["mixture"]
    return [
        f"autoencoder      {meta['autoencoder']['id']}  ({meta['resolution']} px -> {c}x{h}x{w} latents, "
        f"encoded in {fit.get('encoding_precision', 'fp32')})",
        f"training images  {fit['n_images']}",
        f"projector        q = {q} of {c} channels, {100 * fit['explained_variance_ratio']:.1f}% of latent-pixel variance kept",
        f"mixture          K = {K}, d0 = {fit['d0']}, lambda = {hp['temperature']:.4g}"
        + (" (from K)" if fit.get("temperature_requested", hp["temperature"]) is None else "")
        + f", psi = {hp.get('spread', 1.0):g}, d_k = {fit['ranks']}",
        f"                 EM: {fit['em_iterations']} iterations, converged: {fit['em_converged']}, fit {fit['fit_seconds']:.2f} s",
        f"NN step          omega = {hp['patch_size']}, iterations = {hp['nn_iterations']}, "
        f"order {hp.get('nn_order', 'parallel')}"
        + (f", copy budget max_share = {hp['max_share']}" if hp.get("max_share") is not None else ""),
        "parameters       projector {:,}  mixture {:,} (the paper: ~1M)  NN memory {:,} values (N x d0)".format(
            counts["projector"], mix, counts["nn_memory"]
        ) + (f" + the training latents it copies, {fit['n_images'] * c * h * w:,} (N x {c} x {h} x {w})"
             if meta["format_version"] >= 3 else "  (format 2: copies decoded from their codes; refit for full pixels)"),
        *_component_lines(fit),
    ]


def _component_lines(fit: dict) -> list[str]:
    """One line per mixture component (model files from format 2 on record all the columns)."""
    cols = [("weight", "weights", "{:.4f}"), ("d_k", "ranks", "{}"), ("density rank", "density_ranks", "{}"),
            ("noise variance", "noise_variances", "{:.4f}"), ("training faces", "component_counts", "{}")]
    cols = [c for c in cols if fit.get(c[1]) is not None]
    if not cols:
        return []
    lines = ["components       " + "  ".join(["  k"] + [f"{name:>{len(name)}}" for name, _, _ in cols])]
    for k in range(len(fit[cols[0][1]])):
        cells = [f"{k:3d}"] + [f"{fmt.format(fit[key][k]):>{len(name)}}" for name, key, fmt in cols]
        lines.append("                 " + "  ".join(cells))
    if fit.get("hard_assignment") is not None:
        lines.append(f"                 {100 * fit['hard_assignment']:.1f}% of training faces assigned with "
                     "responsibility 1 (classification EM)")
    return lines


def _ray_encode(args, sources, options: dict) -> None:
    """``--engine ray``: encode ``sources`` on Ray into the latent cache and say what happened."""
    from .pipeline.ray_encoding import encode_on_ray

    rep = encode_on_ray(sources, args.autoencoder, resolution=args.resolution, batch_size=args.batch_size,
                        precision=args.precision, address=args.address, workers=args.workers, threads=args.threads,
                        autoencoder_options=options, progress=not args.quiet)
    where = f"the Ray cluster at {args.address}" if args.address else "a local Ray"
    print(f"encoded {rep.encoded} photos on {where} ({rep.workers} workers x {rep.threads} threads, "
          f"{rep.photos_per_second:.1f} photos/s); {rep.cached} were cached already, {len(rep.failed)} failed")


def _add_engine_options(p) -> None:
    from .pipeline.ray_encoding import ENGINES

    g = p.add_argument_group("encoding engine", "where the photos are encoded (needs `pip install 'lrgmm[ray]'` for ray)")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: in this process; ray: Ray workers fill the latent cache (default: local)")
    g.add_argument("--address", default=None, help="Ray cluster address to join, e.g. ray://head:10001 or auto "
                   "(default: start a local Ray on this machine)")
    g.add_argument("--workers", type=_positive_int, default=None,
                   help="Ray encoding actors (default: the cluster's CPUs divided by --threads)")
    g.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads per Ray actor (default: 1 on a local Ray, 2 on a cluster)")


def _check_engine(args) -> None:
    if args.engine != "ray" and (args.address or args.workers or args.threads):
        raise ParameterError("--address, --workers and --threads are for --engine ray")
    if args.engine == "ray" and getattr(args, "no_cache", False):
        raise ParameterError("--engine ray hands the latents over through the latent cache: drop --no-cache")


def cmd_encode(args) -> int:
    from .pipeline.face_pipeline import FacePipeline, InputWarning

    _check_engine(args)
    sources = args.sources if len(args.sources) > 1 else args.sources[0]
    options = _backend_options(args.autoencoder, args)
    if args.engine == "ray":
        _ray_encode(args, sources, options)
    pipe = FacePipeline(autoencoder=_autoencoder_arg(args, options), resolution=args.resolution,
                        batch_size=args.batch_size, precision=args.precision, progress=not args.quiet)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # the summary printed below says the same
        encoded = pipe.encode(sources)
    print(encoded.report.summary())
    print(f"{len(encoded)} latents in the cache ({encoded.n_encoded} encoded in this process, {encoded.n_cached} "
          f"read back; {encoded.autoencoder_id}, {encoded.resolution} px, {encoded.precision}); `lrgmm fit` with "
          "the same autoencoder, resolution and precision reads them")
    return 0


def cmd_fit(args) -> int:
    from .io.atomic import check_writable_target
    from .pipeline.face_pipeline import FacePipeline, InputWarning

    check_writable_target(args.output)  # a bad -o fails now, not after the encoding and the fit
    check_nn_iterations(args.nn_iterations)  # stored in the model: refused now, not at sampling time
    _check_engine(args)
    params = {k: getattr(args, k) for k in FacePipeline().get_params() if hasattr(args, k)}
    params.update(cache=not args.no_cache, progress=not args.quiet)
    options = _backend_options(args.autoencoder, args)
    if args.engine == "ray":
        _ray_encode(args, args.sources if len(args.sources) > 1 else args.sources[0], options)
    params["autoencoder"] = _autoencoder_arg(args, options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # the summary printed below says the same
        pipe = FacePipeline(**params).fit(args.sources if len(args.sources) > 1 else args.sources[0])
    print(pipe.report_.summary())
    path = pipe.save(args.output)
    from .io.model_file import read_metadata

    print("\n".join(_info_lines(read_metadata(path))))  # what was written, format version included
    print(f"model written to {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def cmd_forget(args) -> int:
    from .pipeline.forget_file import forget_model_file, record_path_for
    from .io.atomic import check_writable_target
    from .io.model_file import read_metadata

    check_writable_target(args.output)  # both outputs before reading anything (forget_model_file checks again)
    check_writable_target(args.record or record_path_for(args.output))
    name = read_metadata(args.model).get("autoencoder", {}).get("name", "taef2")
    options = _backend_options(name, args)
    rec = forget_model_file(args.model, args.photos, args.output, record=args.record, check_faces=args.check_faces,
                            seed=args.seed, cache=not args.no_cache, progress=not args.quiet,
                            autoencoder_options=options or None)
    for r in rec["removed"][:10]:
        given = ", ".join(r["given"])
        also = "" if given == r["training_file"] else f" (given as {given})"
        print(f"forgot {r['training_file']}{also}  sha256 {r['sha256'][:16]}...")
    if rec["n_removed"] > 10:
        print(f"... and {rec['n_removed'] - 10} more (all listed in the record)")
    lat, v = rec["latents"], rec["verification"]
    print(f"refitted on {rec['n_images_after']} of {rec['n_images_before']} training photos with the model's own "
          f"settings ({lat['from_cache']} latents from the cache, {lat['encoded']} encoded) in {rec['seconds']:.1f} s")
    checks = [f"the {rec['n_removed']} forgotten photo(s) are not in the training list"]
    if v["memory_codes_checked"]:
        checks.append(f"no NN memory code is theirs ({v['memory_codes_checked']} checked)")
    if v["faces_drawn"]:
        checks.append(f"{v['faces_drawn']} faces drawn (seed {v['faces_seed']}) copy no latent pixel from them")
    print("checked: " + "; ".join(checks))
    print(f"model written to {rec['new_model']['path']} ({rec['n_images_after']} training photos, "
          f"sha256 {rec['new_model']['sha256'][:16]}...)")
    print(f"record written to {rec['record_path']}")
    if Path(args.model).resolve() != Path(args.output).resolve():
        print(f"note: {args.model} still holds the forgotten photos; delete it, or forget with -o {args.model} "
              "to replace it")
    return 0


def _load_pipeline(args):
    """The model file ``args.model`` with the backend options given on the command line."""
    from .io.model_file import read_metadata
    from .pipeline.face_pipeline import FacePipeline

    name = read_metadata(args.model).get("autoencoder", {}).get("name", "taef2")
    options = _backend_options(name, args)
    return FacePipeline.load(args.model, autoencoder_options=options or None, progress=not args.quiet,
                             precision=args.precision)


def cmd_sample(args) -> int:
    from .io.output_folder import EDIT_FILES, SAMPLE_FILES, check_output_folder, clear_own_files
    from .limits import MAX_EDIT_SAMPLES

    if args.labels and not args.where:
        raise ParameterError("--labels is used with --where ATTRIBUTE=VALUE ...")
    if not getattr(args, "edit", None) and getattr(args, "alpha", None) is not None:
        raise ParameterError("--alpha needs --edit EDIT_FILE")
    if args.edit and args.n > MAX_EDIT_SAMPLES:
        raise ParameterError(f"--edit keeps every strip in memory for its grid: at most {MAX_EDIT_SAMPLES} faces (-n), got {args.n:,}")
    if args.nn:
        check_nn_iterations(args.nn_iterations)
    own = EDIT_FILES if args.edit else SAMPLE_FILES
    check_output_folder(args.output, args.overwrite, own)  # before loading anything
    pipe = _load_pipeline(args)
    seed = resolve_seed(args.seed)
    where = {"where": args.where, "labels_csv": args.labels} if args.where else {}
    lrgmm_method = args.method in (None, "lrgmm-nn", "lrgmm")
    if args.edit:
        from .editing import load_edit

        if not lrgmm_method:
            raise ParameterError("--edit works on the model's own faces; drop --method or --edit")
        edit = load_edit(args.edit)
        edit.check_model(pipe, args.edit)  # before generating anything
        out = pipe.generate(args.n, seed, nn=args.nn and args.method != "lrgmm", temperature=args.temperature,
                            nn_iterations=args.nn_iterations, patch_size=args.patch_size, max_share=args.max_share,
                            nn_order=args.nn_order, spread=args.spread, **where)
        alphas = args.alpha if args.alpha is not None else list(_edit_defaults()["alphas"])
        edited = pipe.edit(out, edit, alphas=alphas, nn=args.nn, max_share=args.max_share)
        print(f"seed {seed}")
        clear_own_files(args.output, own)
        _write_edits(edited, args)
        return 0
    if lrgmm_method:
        # Batches of 64: drawn, decoded and written one after the other (memory flat in n).
        batches = pipe.generate_batches(
            args.n, seed, nn=args.nn and args.method != "lrgmm", temperature=args.temperature,
            nn_iterations=args.nn_iterations, patch_size=args.patch_size, max_share=args.max_share,
            nn_order=args.nn_order, spread=args.spread, **where)
    else:
        if args.max_share is not None:
            raise ParameterError(f"--max-share works with the LR-GMM-NN method, not --method {args.method}")
        if args.nn_order is not None:
            raise ParameterError(f"--nn-order works with the LR-GMM-NN method, not --method {args.method}")
        if args.spread is not None:
            raise ParameterError(f"--spread works with the LR-GMM methods (lrgmm-nn, lrgmm), not --method {args.method}")
        if where:
            raise ParameterError(f"--where works with the LR-GMM methods (lrgmm-nn, lrgmm), not --method {args.method}")
        batches = _baseline(args.method, pipe).generate_batches(args.n, seed)
    from .pipeline.face_pipeline import FaceWriter

    clear_own_files(args.output, own)
    settings: dict = {}
    with FaceWriter(args.output, total=args.n, progress=not args.quiet) as writer:
        for batch in batches:  # drawn and decoded while the writer thread writes the one before
            writer.write(batch)
            settings = batch.settings
        written = writer.close(seed, settings)
    shown = " (the first 64)" if args.n > 64 else ""
    print(f"{args.n} faces (seed {seed}) written to {args.output}/: grid.png{shown}, face_*.png"
          + (", face_*_provenance.png/.json, provenance_grid.png" if written["provenance_maps"] else ""))
    if args.where:
        print(f"conditions {settings['where']}: drawn from {settings['labelled_training_faces']} labelled training faces")
    return 0


def cmd_complete(args) -> int:
    from .data.masks import box_mask
    from .pipeline.conditional import complete_image
    from .io.output_folder import COMPLETE_FILES, check_output_folder, clear_own_files

    if args.nn:
        check_nn_iterations(args.nn_iterations)
    check_output_folder(args.output, args.overwrite, COMPLETE_FILES)
    pipe = _load_pipeline(args)
    mask = box_mask(pipe.resolution, *args.box) if args.box else args.mask
    seed = resolve_seed(args.seed)
    out = complete_image(
        pipe, args.photo, mask, args.n, seed, nn=args.nn, temperature=args.temperature, noise=args.noise,
        patch_size=args.patch_size, nn_iterations=args.nn_iterations, threshold=args.threshold, feather=args.feather,
        max_share=args.max_share,
    )
    clear_own_files(args.output, COMPLETE_FILES)
    out.save(args.output)
    print(f"{len(out)} completions (seed {seed}) of {args.photo} written to {args.output}/: grid.png, "
          f"completion_*.png, completion_*_provenance.png/.json; {int(out.unknown.sum())} of "
          f"{out.unknown.numel()} latent positions generated")
    return 0


def cmd_info(args) -> int:
    from .io.model_file import read_metadata

    if args.json:
        meta = read_metadata(args.model)
        if not args.files:
            meta.pop("training_files", None)
        print(json.dumps(meta, indent=1, allow_nan=False))  # strict JSON: the reader refused NaN/inf
        return 0
    meta = read_metadata(args.model)
    size = Path(args.model).stat().st_size
    print(f"model file       {args.model} ({size / 2**20:.1f} MiB, format version {meta['format_version']})")
    print("\n".join(_info_lines(meta)))
    if args.files:
        for f in meta.get("training_files", []):
            print(f"  {f['path']}  sha256 {f['sha256']}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    from .io.model_file import read_metadata
    from .io.output_folder import DEMO_FILES, check_output_folder, clear_own_files

    check_output_folder(args.output, args.overwrite, DEMO_FILES)
    res = run_demo(args.data, args.n_train, args.n, args.output, args.seed, progress=not args.quiet,
                   before_writing=lambda out: clear_own_files(out, DEMO_FILES), precision=args.precision)
    print("\n".join(_info_lines(read_metadata(res.model_path))))  # the written model's summary
    print(f"\n{res.n_faces} new faces written to {res.out_dir}/")
    print(f"  grid:             {res.out_dir / 'grid.png'}")
    print(f"  provenance maps:  {res.out_dir / 'provenance_grid.png'} (one colour per training face)")
    print("  per face:         face_XXXX.png, face_XXXX_provenance.png, face_XXXX_provenance.json")
    print(f"  model:            {res.model_path}  (try `lrgmm sample {res.model_path} -n 16 -o more/`)")
    return 0


def cmd_eval(args) -> int:
    from .evaluation import evaluate

    generator, reference = args.model, None
    if args.method not in (None, "lrgmm-nn", "lrgmm"):
        from .pipeline.face_pipeline import FacePipeline

        reference = FacePipeline.load(args.model, progress=not args.quiet)
        generator = _baseline(args.method, reference)
    nn = args.nn and args.method != "lrgmm"
    kwargs = {} if nn or reference is not None else {"nn": False}
    if args.max_share is not None:
        if reference is not None:
            raise ParameterError(f"--max-share works with the LR-GMM-NN method, not --method {args.method}")
        kwargs["max_share"] = args.max_share
    res = evaluate(
        generator,
        args.real,
        n=args.n,
        seed=args.seed,
        reference=reference,
        generate_kwargs=kwargs or None,
        memorisation={"full": True, "codes": "codes", "none": False}[args.memorisation],
        near_copy_quantile=args.near_copy_quantile,
        copying_cells=args.copying_cells,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        batch_size=args.batch_size,
        progress=not args.quiet,
        figures=args.figures,
    )
    print(res.table())
    for path in getattr(res, "files", []):
        print(f"memorisation figure: {path}" if path.suffix == ".png" else f"  its faces and distances: {path}")
    if args.json:
        res.to_json(args.json, per_face=args.per_face)
        print(f"results written to {args.json}")
    return 0


def cmd_weights_download(args) -> int:
    from .io.weights import download_weights

    paths = download_weights(args.backend, dest_dir=args.dest, base_url=args.base_url, progress=not args.quiet)
    for p in paths:
        print(p)
    return 0


def cmd_autoencoders(args) -> int:
    from .autoencoders import available

    for name in available():
        print(name)
    return 0


def cmd_serve(args) -> int:
    from .studio.server import serve

    serve(args.models, args.data or (), host=args.host, port=args.port, workers=args.workers, precision=args.precision)
    return 0


def _port_number(text: str) -> int:
    """argparse type of ``serve --port``: checked while parsing, before anything is loaded or printed."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number between 1 and 65535, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {port}")
    return port


def _add_serve_parser(sub) -> None:
    """``lrgmm serve``: the web studio (needs the ``studio`` extra; imported only when run)."""
    from .studio.server import serve

    p = sub.add_parser("serve", help="the web studio: fit, generate and inspect provenance in the browser")
    p.add_argument("models", nargs="*", help="model files to load (more can be fitted in the page)")
    p.add_argument("--data", action="append", default=None, help="folder of face photos the page may fit from (repeatable)")
    _opt(p, serve, "host", help="interface to bind; anything but loopback is reachable by others (no authentication)")
    _opt(p, serve, "port", type=_port_number, help="port (1..65535)")
    _opt(p, serve, "workers", type=_positive_int, help="decoding threads")
    _add_precision_option(p, serve)
    p.set_defaults(func=cmd_serve)


def _load_for_edit(model: str, quiet: bool, precision: str | None = None):
    from .errors import ModelFileError
    from .pipeline.face_pipeline import FacePipeline

    if Path(model).is_dir():
        raise ModelFileError(
            f"{model} is a folder, not a model file: fit a model first (`lrgmm fit {model} -o faces.lrgmm`), "
            "then `lrgmm edit-fit faces.lrgmm --attribute ...` (add --data FOLDER to fit the edit on other labelled photos)"
        )
    return FacePipeline.load(model, progress=not quiet, **({"precision": precision} if precision else {}))


def cmd_edit_fit(args) -> int:
    from .editing import AttributeEdit
    from .io.atomic import check_writable_target

    check_writable_target(args.output)  # before loading the model and fitting the edit
    pipe = _load_for_edit(args.model, args.quiet)
    params = {k: getattr(args, k) for k in AttributeEdit().get_params() if hasattr(args, k)}
    params["progress"] = not args.quiet
    source = None
    if args.data:
        source = args.data if len(args.data) > 1 else args.data[0]
    edit = AttributeEdit(**params).fit(
        pipe, attribute=args.attribute, source=source, labels_csv=args.labels, negative=args.negative, positive=args.positive
    )
    path = edit.save(args.output)
    rep = edit.parameter_report()
    print(f"{edit.method} edit of {edit.attribute_}: {edit.negative_} ({edit.n_negative_} images) -> "
          f"{edit.positive_} ({edit.n_positive_} images), fitted in {edit.fit_seconds_:.1f} s")
    print(f"H: {rep['n_parameters']:,} values ({100 * rep['share_of_full']:.3f}% of a full d0 x d0 affine map, d0 = {rep['d0']:,})")
    if edit.history_:
        print(f"validation loss {edit.info_['initial_validation_loss']:.2f} -> {edit.info_['best_validation_loss']:.2f} "
              f"(best epoch {edit.info_['best_epoch']} of {edit.info_['epochs']})")
    print(f"edit written to {path}")
    return 0


def _write_edits(out, args) -> None:
    written = out.save(args.output)
    alphas = " ".join(f"{a:g}" for a in out.alphas)
    print(f"{len(out)} strip(s) (input, then alpha = {alphas}) written to {args.output}/: edit_*.png, grid.png, edits.json"
          + (", edit_*_provenance.png" if written["provenance_strips"] else ""))


def cmd_edit(args) -> int:
    from .editing import load_edit
    from .io.output_folder import EDIT_FILES, check_output_folder, clear_own_files

    check_output_folder(args.output, args.overwrite, EDIT_FILES)
    pipe = _load_for_edit(args.model, args.quiet, args.precision)
    edit = load_edit(args.edit)
    edit.check_model(pipe, args.edit)
    out = pipe.edit(args.images, edit, alphas=args.alpha, nn=args.nn)
    clear_own_files(args.output, EDIT_FILES)
    _write_edits(out, args)
    return 0


_LIST_OPTIONS = ("--alpha",)  # options taking one or more numbers (nargs="+")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _numbers_last(args: list[str]) -> list[str]:
    """Move ``--alpha 1 2`` (the option and the numbers after it) to the end of the arguments
    when a positional argument follows the numbers, so that argparse's greedy nargs="+" does not
    take the photos after it for alphas (the README's ``--alpha -2 -1 0 1 2 a.jpg b.jpg -o
    out/``). Anything after ``--`` is left alone; a non-number right after ``--alpha`` is left in
    place for argparse to report."""
    out = list(args)
    i = 0
    while i < len(out):
        if out[i] == "--":
            break
        if out[i] in _LIST_OPTIONS:
            j = i + 1
            while j < len(out) and _is_number(out[j]):
                j += 1
            if j > i + 1 and j < len(out) and not out[j].startswith("-"):
                group = out[i:j]
                del out[i:j]
                out.extend(group)
                continue  # out[i] is now the token that followed the numbers
            i = j
            continue
        i += 1
    return out


class _Parser(argparse.ArgumentParser):
    """The ``lrgmm`` parser: argparse plus ``_numbers_last`` on the command line."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(_numbers_last(args), namespace)


def build_parser() -> argparse.ArgumentParser:
    from .demo import run_demo

    parser = _Parser(prog="lrgmm", description="Frugal, explainable face generation (LR-GMM-NN).")
    parser.add_argument("--version", action="version", version=f"lrgmm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="encode a folder of faces and fit a model file")
    p.add_argument("sources", nargs="+", help="folder(s) or image file(s)")
    p.add_argument("-o", "--output", required=True, type=_output_path, help="model file to write, e.g. faces.lrgmm")
    _add_model_options(p)
    _add_backend_options(p)
    _add_precision_option(p)
    p.add_argument("--no-cache", action="store_true", help="do not read or write the latent cache")
    _add_engine_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_fit)

    from .pipeline.face_pipeline import FacePipeline

    init = FacePipeline.__init__
    p = sub.add_parser("encode", help="encode a folder of faces into the latent cache (in process or on Ray)")
    p.add_argument("sources", nargs="+", help="folder(s) or image file(s)")
    _opt(p, init, "autoencoder", help="autoencoder backend (see `lrgmm autoencoders`)")
    _opt(p, init, "resolution", type=int, help="working image side in pixels")
    _opt(p, init, "batch_size", type=_positive_int, help="images per encoder batch")
    _add_backend_options(p)
    _add_precision_option(p)
    _add_engine_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("sample", help="generate faces with provenance maps from a model file")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, type=_output_path, help="output folder (new or empty; see --overwrite)")
    _add_overwrite_option(p)
    _add_sampling_options(p)
    _add_method_option(p)
    _add_backend_options(p)
    _add_precision_option(p)
    p.add_argument("--edit", default=None, help="an edit file (`lrgmm edit-fit`): write strips of the faces edited at --alpha")
    p.add_argument("--alpha", type=float, nargs="+", default=None, help="edit strengths for --edit (default: -2 -1 0 1 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--where", nargs="+", default=None, metavar="ATTR=VALUE",
                   help="sample faces with these labels, e.g. gender=female age=senior (UTKFace names or --labels)")
    p.add_argument("--labels", default=None, help="CSV 'file,<attribute>,...' labelling the training files (with --where)")
    p.set_defaults(func=cmd_sample)

    from .pipeline.conditional import complete_image

    p = sub.add_parser("complete", help="complete a masked face photo: several fillings of the hole, with provenance")
    p.add_argument("model")
    p.add_argument("photo", help="the face photo (prepared like training images: centre crop, resize)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--mask", help="mask image, white = missing, at the photo's size or the working resolution")
    g.add_argument("--box", nargs=4, type=int, metavar=("X0", "Y0", "X1", "Y1"),
                   help="missing box in working-resolution pixels (x1, y1 excluded)")
    _opt(p, complete_image, "n", "-n", "--n", type=_positive_int, help="completions")
    p.add_argument("-o", "--output", required=True, type=_output_path, help="output folder (new or empty; see --overwrite)")
    _add_overwrite_option(p)
    p.add_argument("--seed", type=_seed, default=None, help="seed; default: a fresh one, printed so the run can be repeated")
    p.add_argument("--no-nn", dest="nn", action="store_false", default=_default(complete_image, "nn"), help="skip the NN step")
    p.add_argument("--temperature", "--lambda", type=_lambda, default=None, help="lower lambda than the fitted one (default: the model's)")
    p.add_argument("--noise", action=argparse.BooleanOptionalAction, default=_default(complete_image, "noise"),
                   help="draw the exact conditional, isotropic residual included (--no-noise: only the low-rank part, like eq. 4)")
    p.add_argument("--nn-iterations", type=int, default=None, help="NN projections (default: the model's)")
    p.add_argument("--patch-size", "--omega", type=int, default=None, help="NN patch size (default: the model's)")
    _add_max_share_option(p, complete_image)
    _opt(p, complete_image, "threshold", type=float, help="a latent position is generated when more than this share of its pixel block is masked")
    _opt(p, complete_image, "feather", type=int, help="blend width in pixels outside the mask")
    _add_backend_options(p)
    _add_precision_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("forget", help="refit a model without some photos (matched by content), with a record")
    p.add_argument("model", help="the .lrgmm model file")
    p.add_argument("photos", nargs="+",
                   help="photos to forget: image files (renamed copies are found), folders, or sha256 hashes")
    p.add_argument("-o", "--output", required=True, type=_output_path,
                   help="new model file (may be MODEL itself, replaced atomically)")
    p.add_argument("--record", type=_output_path, default=None, help="JSON record to write (default: OUTPUT.forget.json)")
    from .pipeline.forget_file import forget_model_file

    _opt(p, forget_model_file, "check_faces", type=_check_count,
         help="faces drawn from the new model (latents only) to check that none copies from a forgotten photo; 0: none")
    _opt(p, forget_model_file, "seed", "--check-seed", type=_seed, help="seed of those faces")
    _add_backend_options(p)
    p.add_argument("--no-cache", action="store_true", help="do not read the latent cache: encode every photo kept")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("info", help="what a model file holds: sizes, parameter counts, settings")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print the raw metadata as JSON")
    p.add_argument("--files", action="store_true", help="also list the training files")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="fit on 1,024 shared faces and write 64 new ones with provenance")
    _opt(p, run_demo, "data", help="folder of face photos; default: the shared UTKFace folder beside the checkout")
    _opt(p, run_demo, "n_train", type=int, help="training photos drawn from the folder")
    _opt(p, run_demo, "n_samples", "-n", "--n", type=_face_count, help=f"faces to generate, at most {MAX_SAMPLES:,}")
    _opt(p, run_demo, "out_dir", "-o", "--output", type=_output_path, help="output folder (new or empty; see --overwrite)")
    _add_overwrite_option(p)
    _opt(p, run_demo, "seed", type=_seed, help="seed of the training subset, the fit and the samples")
    _add_precision_option(p, run_demo)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    from .evaluation import evaluate
    from .pipeline.face_pipeline import FacePipeline

    p = sub.add_parser("eval", help="FID, KID, precision/recall and memorisation against held-out real faces")
    p.add_argument("model", help="a .lrgmm model file")
    p.add_argument("--real", required=True, help="folder of held-out real faces (not training images)")
    _opt(p, evaluate, "n", "-n", "--n", type=_face_count, help=f"faces to generate, at most {MAX_SAMPLES:,}")
    p.add_argument("--seed", type=_seed, default=None, help="seed; default: a fresh one, printed")
    p.add_argument("--no-nn", dest="nn", action="store_false", default=True, help="plain LR-GMM (no NN step)")
    _add_max_share_option(p, FacePipeline.generate)
    _opt(p, evaluate, "near_copy_quantile", type=float, help="held-out quantile below which a face is a near copy")
    _opt(p, evaluate, "copying_cells", type=_positive_int,
         help="k-means cells of the data-copying test C_T; None: about 50 faces of each set per cell, at most 50")
    _opt(p, evaluate, "kid_subsets", type=int, help="KID subsets")
    _opt(p, evaluate, "kid_subset_size", type=int, help="KID subset size (capped at the smaller set)")
    _opt(p, evaluate, "batch_size", type=int, help="Inception batch size")
    p.add_argument("--memorisation", choices=["full", "codes", "none"], default="full",
                   help="nearest-training-face measures in Inception space and latent codes (full), latent codes "
                        "only (codes: no decoding of the training set, for large models), or none")
    p.add_argument("--no-memorisation", dest="memorisation", action="store_const", const="none",
                   help="same as --memorisation none")
    _add_method_option(p)
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument("--per-face", action="store_true", help="per-face distances in the JSON")
    p.add_argument("--figures", type=Path, default=None, metavar="DIR",
                   help="write the memorisation figure there: the 16 faces closest to the training set beside their "
                        "3 nearest training faces, with distances and the near-copy threshold (PNG + JSON)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)

    from .editing import EDIT_METHODS, AttributeEdit

    fit_edit = AttributeEdit.fit
    p = sub.add_parser("edit-fit", help="learn an attribute edit (e.g. gender) for a model file")
    p.add_argument("model", help="a .lrgmm model file (fit one with `lrgmm fit FOLDER -o faces.lrgmm`)")
    p.add_argument("--attribute", default=_default(fit_edit, "attribute"),
                   help=f"attribute to edit: gender, age, race (UTKFace names) or a --labels column (default: {_default(fit_edit, 'attribute')})")
    p.add_argument("--data", nargs="+", default=None, help="labelled photos to fit on (default: the model's training photos)")
    p.add_argument("--labels", default=None, help="CSV file,<attribute>... (default: UTKFace file names)")
    p.add_argument("--negative", default=None, help="category edited away from (alpha > 0); needed for age: child/adult/senior")
    p.add_argument("--positive", default=None, help="category edited towards (alpha > 0)")
    init = AttributeEdit.__init__
    _opt(p, init, "method", choices=EDIT_METHODS, help="how H is learned")
    _opt(p, init, "rank", type=int, help="rank of the low-rank term of H (wasserstein)")
    _opt(p, init, "cost", choices=("joint", "pixels"), help="transport between whole codes (the paper) or per latent position (wasserstein)")
    _opt(p, init, "preservation", type=float, help="lambda of the attribute-preservation loss (wasserstein; 0 = core method)")
    _opt(p, init, "blur", type=float, help="Sinkhorn blur (eps = blur^2); default: the median code distance")
    _opt(p, init, "learning_rate", type=float, help="Adam learning rate")
    _opt(p, init, "max_epochs", type=int, help="maximum epochs")
    _opt(p, init, "patience", type=int, help="early-stopping patience in epochs")
    _opt(p, init, "min_examples", type=int, help="fewest images accepted per side")
    _opt(p, init, "random_state", "--seed", type=_seed, help="seed of the validation split and batches")
    p.add_argument("-o", "--output", required=True, type=_output_path, help="edit file to write, e.g. gender.edit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_edit_fit)

    ef = _edit_defaults()
    p = sub.add_parser("edit", help="edit photos along an attribute: one strip of faces per photo")
    p.add_argument("model", help="the .lrgmm model file the edit was fitted for")
    p.add_argument("edit", help="an edit file from `lrgmm edit-fit`")
    p.add_argument("images", nargs="+", help="photos to edit")
    p.add_argument("--alpha", type=float, nargs="+", default=list(ef["alphas"]),
                   help=f"edit strengths; > 0 towards the positive category (default: {' '.join(str(a) for a in ef['alphas'])})")
    p.add_argument("--no-nn", dest="nn", action="store_false", default=ef["nn"], help="skip the NN step after the edit")
    _add_precision_option(p)
    p.add_argument("-o", "--output", required=True, type=_output_path, help="output folder (new or empty; see --overwrite)")
    _add_overwrite_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("weights", help="autoencoder weights")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    w = wsub.add_parser("download", help="download and sha256-check weights into the per-user cache")
    w.add_argument("backend", help="e.g. taef2")
    w.add_argument("--dest", default=None, help="folder to write to (default: the per-user cache)")
    w.add_argument("--base-url", default=None, help="download from this mirror instead of upstream")
    w.add_argument("--quiet", action="store_true")
    w.set_defaults(func=cmd_weights_download)

    p = sub.add_parser("autoencoders", help="list the autoencoder backends")
    p.set_defaults(func=cmd_autoencoders)

    _add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        args.n, args.output = args.n_samples, args.out_dir
    # Scoped, so calling main() from Python leaves the caller's warning settings alone.
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except LrgmmError as exc:  # bad input or option values: a message, no traceback
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # disk full, permission denied, output path is a folder...
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as exc:
            from .errors import EncodingInterrupted

            if isinstance(exc, EncodingInterrupted):  # only then is there something to resume
                print("interrupted; encoded latents so far are cached, rerun to resume", file=sys.stderr)
            else:
                print("interrupted", file=sys.stderr)
            return 130


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
