"""The offline engine: real storyboards and real H.264 clips rendered on the CPU, no network, no key.

It is what `python flows/storyboard.py` runs on a fresh machine, and what `--offline` puts every
step on. Its output is deterministic: the same request makes the same picture.
"""

from __future__ import annotations

from pathlib import Path

from storyboard_core import media
from storyboard_core.engines.base import ClipJob, Generated, ImageJob
from storyboard_core.registry import Model


class LocalEngine:
    name = "local"

    def text_to_image(self, model: Model, job: ImageJob, dest: Path) -> Generated:
        size = media.storyboard_size(str(job.arguments.get("aspect_ratio", "16:9")))
        media.save_image(media.render_storyboard(job.prompt, size), dest)
        return Generated(dest)

    def image_to_video(self, model: Model, job: ClipJob, dest: Path) -> Generated:
        media.render_clip(job.image, dest, job.duration, motion=job.prompt)
        return Generated(dest)
