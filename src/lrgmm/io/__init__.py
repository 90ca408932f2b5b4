"""Input/output: image files in and out, and the on-disk cache of encoded latents."""

from lrgmm.io.images import (
    IMAGE_EXTENSIONS,
    ImageList,
    InputReport,
    LoadedImages,
    list_images,
    load_image,
    load_images,
    make_grid,
    save_png,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageList",
    "InputReport",
    "LoadedImages",
    "list_images",
    "load_image",
    "load_images",
    "make_grid",
    "save_png",
]
