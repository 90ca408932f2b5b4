"""The studio's bounds on requests and on what the server keeps in memory (``Limits``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..io.images import MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class Limits:
    """Bounds on requests and on what the server keeps in memory."""

    max_faces: int = 64  # faces per generate request
    max_cached_faces: int = 512  # decoded faces kept across all grids (oldest grids dropped)
    decode_batch: int = 4  # faces decoded per step: the first faces show after one small batch
    max_nn_iterations: int = 5
    max_upload_files: int = 256
    max_upload_bytes: int = 8 * 2**20  # per file
    max_upload_pixels: int = MAX_IMAGE_PIXELS  # per image (a small file can hold a huge, flat image)
    max_request_bytes: int = 256 * 2**20  # per upload request, counted as the bytes arrive
    max_json_bytes: int = 64 * 2**10  # per request other than uploads (JSON bodies are small)
    max_uploads: int = 4  # upload folders kept per session (its oldest removed for a new one)
    max_total_uploads: int = 64  # upload folders across sessions: beyond, new uploads are refused (503)
    max_total_upload_bytes: int = 2 * 2**30  # bytes of uploads across sessions: beyond, refused (503)
    upload_idle_s: float = 3600.0  # an upload unused this long may be removed to make room for others
    max_data_pixels: int = MAX_IMAGE_PIXELS  # per image of a --data folder (larger ones are skipped)
    max_fit_images: int = 4096
    max_models: int = 8  # models fitted in the studio (oldest dropped); loaded models stay
    max_queue: int = 64  # tasks waiting per pool before new work is refused (503)
    max_jobs: int = 32  # finished fit jobs remembered
    thumbnail_cache: int = 256
    max_neighbour_models: int = 4  # models whose training faces' Inception features are kept in memory
    neighbour_chunk: int = 32  # training faces decoded and measured per step (the progress granularity)
