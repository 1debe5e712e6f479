"""Unsaved label edits of a dataset version (the Labelling page's drafts): one JSON file per version
under the home folder, written on each change, so leaving the page half-way loses nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from storage.artifacts import write_atomic

Labels = Sequence[Mapping[str, Any]]  # one image's complete label list, as JSON objects


class DraftStore:
    """The drafts under ``root``: image id -> that image's edited labels, per dataset version (or, with
    ``prefix`` "review", review item id -> its accepted labels, per endpoint id)."""

    def __init__(self, root: Path, prefix: str = "version") -> None:
        self.root, self.prefix = root, prefix

    def path(self, version_id: int) -> Path:
        return self.root / f"{self.prefix}-{version_id}.json"

    def load(self, version_id: int) -> dict[int, list[dict[str, Any]]]:
        """The version's draft; empty when there is none, or it cannot be read (a draft is a
        convenience, never a reason for the page to fail)."""
        try:
            data = json.loads(self.path(version_id).read_text(encoding="utf-8"))
            images = data["images"] if data.get("version_id") == version_id else {}
            return {int(image_id): list(labels) for image_id, labels in images.items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return {}

    def save(self, version_id: int, images: Mapping[int, Labels]) -> None:
        """Replace the version's draft with ``images`` (atomically); an empty one removes it."""
        if not images:
            self.remove(version_id)
            return
        text = json.dumps({"version_id": version_id,
                           "images": {str(i): [dict(label) for label in labels] for i, labels in images.items()}})
        write_atomic(self.path(version_id), text.encode("utf-8"))

    def remove(self, version_id: int) -> None:
        self.path(version_id).unlink(missing_ok=True)
