"""Exceptions the package raises for bad input. Each message names the file or value at fault
and says what to do; the command line prints the message without a traceback."""


class LrgmmError(Exception):
    """Base class of every error raised on purpose by lrgmm."""


class WeightsError(LrgmmError):
    """Autoencoder weights are missing, unreadable, or have the wrong sha256."""


class ImageInputError(LrgmmError):
    """No usable image in the input, or an input path that does not exist."""


class ModelFileError(LrgmmError):
    """A model file is truncated, from a newer format, or made for another autoencoder."""


class FitError(LrgmmError):
    """The data cannot be fitted as asked (too few images, non-finite latents...)."""


class OutputPathError(LrgmmError, OSError):
    """An output path lrgmm will not write to: not a regular file (a folder, a device, a FIFO, a
    symbolic link), an empty name, or a folder that cannot be written to."""


class OptionalDependencyError(LrgmmError, ImportError):
    """A feature needs a package that is not installed; the message names the extra to install."""


class LimitError(LrgmmError, ValueError):
    """A value beyond a documented limit (``lrgmm.limits``): too many faces, NN iterations, a
    seed outside [0, 2**63)."""


class OutputExistsError(LrgmmError):
    """An output folder already holds files and ``--overwrite`` was not given."""


class BudgetError(LrgmmError, ValueError):
    """A copy budget (``max_share``) that is not a number in (0, 1], or that the training photos
    cannot meet (too few photos in a cluster); the message names the smallest feasible value."""


class ForgetError(LrgmmError, ValueError):
    """A photo to forget is not in the model, or the photos kept cannot be gathered for the refit
    (a training file neither in the latent cache nor on disk as recorded); nothing is written."""
