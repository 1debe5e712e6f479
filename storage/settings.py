"""Process-wide settings, read from the environment once by each entry point and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where Kestrel keeps its data and the limits it applies to user input.

    Every field can be set as an environment variable with the ``KESTREL_`` prefix,
    e.g. ``KESTREL_HOME=/data/kestrel``.
    """

    model_config = SettingsConfigDict(env_prefix="KESTREL_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".kestrel")
    database_url: str | None = None
    # PIL's own bomb guard warns at ~89 Mpx; 64 Mpx covers 8K photos and refuses bombs.
    max_image_pixels: int = 64_000_000
    # An image file is read whole; 256 MB is past any photo (a 64 Mpx TIFF is ~192 MB) and
    # refuses a device or a giant file before memory runs out.
    max_image_bytes: int = 256 * 1024**2
    max_upload_bytes: int = 4 * 1024**3
    max_archive_members: int = 200_000
    # Ratio of uncompressed to compressed size above which a zip member is a bomb.
    max_compression_ratio: int = 200
    # A scoring request above this size is refused with 413 (a few large photos fit).
    max_request_bytes: int = 32 * 1024**2
    # Pixels of all images of one scoring request together, read from their headers before any is
    # decoded: a few KB of 1-bit PNGs can decode to gigabytes. Two images at max_image_pixels fit, and
    # so does a batch of a dozen 8 Mpx phone photos.
    max_request_pixels: int = 128_000_000
    # Seals endpoint keys in the database (storage.secrets); unset: the file secret.key in home.
    secret_key: SecretStr | None = None
    # A job file is a few KB of YAML; 1 MB leaves room for long choice lists and refuses junk.
    max_job_file_bytes: int = 1024**2
    # A grid sweep runs every point; 100,000 is weeks of trials, far past any max_trials (≤ 1000).
    max_grid_points: int = 100_000
    # A job during which the worker died this many times with no progress in between fails instead of
    # being queued again: it would take down every worker that claims it.
    max_job_crashes: int = 2
    # Each trial log (trial.log, console.log) rotates to one ``.1`` file at this size: at most twice it
    # per log, while a runaway print loop cannot fill the disk.
    max_log_bytes: int = 20 * 1024**2
    # A finished trial's model is timed on this machine (batch 1, a batch, ONNX Runtime) for the job's
    # accuracy-against-latency chart: seconds per trial; the test suite turns it off but for its own tests.
    measure_latency: bool = True

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'kestrel.db'}"

    @property
    def blobs_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def drafts_dir(self) -> Path:
        """Unsaved label edits, one file per dataset version (storage.drafts)."""
        return self.home / "drafts"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    def job_dir(self, job_id: int) -> Path:
        """Where a job's outputs lie (a scoring's answers, an export's files): worker writes, pages read."""
        return self.runs_dir / f"job-{job_id}"
