"""Images and clips: storyboard grids, cutting them into panels, Ken Burns clips, probing clips.

Pillow draws and cuts images; PyAV (FFmpeg) encodes H.264. Every writer goes through
`atomic_path`, so no half-written image or clip is ever visible under its final name.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from storyboard_core.files import atomic_path

MAX_GRID = 8
FPS = 24

_GRID = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
_GRID_IN_PROMPT = re.compile(r"\b([1-8])\s*[xX×]\s*([1-8])\b")
_PANEL_LINE = re.compile(r"^\s*Panel\s+(\d+)\s*[:.)\-–]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


# --- grids --------------------------------------------------------------------------------------


def parse_grid(text: str) -> tuple[int, int]:
    """`"2x3"` -> `(2, 3)`: rows by columns, each in 1..8."""
    match = _GRID.match(str(text))
    if match:
        rows, cols = int(match[1]), int(match[2])
        if 1 <= rows <= MAX_GRID and 1 <= cols <= MAX_GRID:
            return rows, cols
    raise ValueError(
        f'must be "RxC" (rows x columns, each 1..{MAX_GRID}), such as "2x2" or "3x3"; got {text!r}.'
    )


def grid_from_prompt(prompt: str) -> tuple[int, int]:
    """The grid a storyboard prompt asks for: an explicit "3x3", else enough cells for its "Panel N:" lines."""
    match = _GRID_IN_PROMPT.search(prompt)
    if match:
        return int(match[1]), int(match[2])
    count = max((int(n) for n, _ in _PANEL_LINE.findall(prompt)), default=4)
    count = max(1, min(count, MAX_GRID * MAX_GRID))
    cols = 1
    while cols * cols < count:
        cols += 1
    rows = -(-count // cols)
    return rows, cols


def panel_captions(prompt: str, count: int) -> list[str]:
    """One caption per cell: the prompt's "Panel N: ..." line for cell N, else "Panel N"."""
    lines = {int(n): text for n, text in _PANEL_LINE.findall(prompt)}
    return [lines.get(n, f"Panel {n}") for n in range(1, count + 1)]


def split_grid(source: Path | BinaryIO, grid: tuple[int, int]) -> list[Image.Image]:
    """Cut an image into rows x cols panels, row-major. Cells cover the image exactly; when the size
    does not divide by the grid, cells differ by at most one pixel instead of dropping the remainder."""
    rows, cols = grid
    with Image.open(source) as opened:
        image = opened.copy()
    width, height = image.size
    if width < cols or height < rows:
        raise ValueError(f"a {width}x{height} image cannot be cut into a {rows}x{cols} grid")
    panels = []
    for r in range(rows):
        for c in range(cols):
            box = (c * width // cols, r * height // rows, (c + 1) * width // cols, (r + 1) * height // rows)
            panels.append(image.crop(box))
    return panels


# --- image files --------------------------------------------------------------------------------


def encode_image(image: Image.Image, suffix: str) -> bytes:
    """The bytes `save_image` writes for this suffix. Deterministic, so a panel's content hash
    (its cache key) can be computed before the panel is written."""
    fmt = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}[suffix.lower().lstrip(".")]
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    options = {"PNG": {}, "JPEG": {"quality": 95}, "WEBP": {"quality": 95, "method": 4}}[fmt]
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def save_image(image: Image.Image, dest: Path) -> Path:
    data = encode_image(image, dest.suffix)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return dest


# --- storyboards --------------------------------------------------------------------------------

_LONG_SIDE = 1280


def storyboard_size(aspect_ratio: str = "16:9", long_side: int = _LONG_SIDE) -> tuple[int, int]:
    """Pixel size for an aspect ratio such as "16:9", long side `long_side`, both sides even."""
    w, h = (int(part) for part in aspect_ratio.split(":"))
    if w >= h:
        width, height = long_side, long_side * h / w
    else:
        width, height = long_side * w / h, long_side
    return int(width) // 2 * 2, int(height) // 2 * 2


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _scene(index: int, caption: str, size: tuple[int, int]) -> Image.Image:
    """One recognisable cell: its own palette and landmark, the panel number and its caption."""
    width, height = size
    seed = _seed(caption)
    hue = (index * 0.27 + (seed % 97) / 970) % 1.0
    top = tuple(int(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.55, 0.95))
    bottom = tuple(int(255 * v) for v in colorsys.hsv_to_rgb((hue + 0.08) % 1.0, 0.8, 0.35))
    gradient = Image.linear_gradient("L").resize(size)
    cell = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), gradient)
    draw = ImageDraw.Draw(cell)
    # A sun or moon placed by the panel's number, and rolling hills: large shapes survive the
    # Ken Burns crop and make panels easy to tell apart.
    r = height // 6
    cx = width * (0.2 + 0.6 * ((index * 37 + seed) % 100) / 100)
    cy = height * 0.3
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(255 * v) for v in colorsys.hsv_to_rgb((hue + 0.5) % 1, 0.3, 1)))
    for layer in range(3):
        base = height * (0.62 + 0.1 * layer)
        amplitude = height * 0.06
        phase = (seed >> (layer * 4)) % 17
        points = [(x, base - amplitude * ((((x + phase * 13) // (width / 4 + 1)) % 2) * 2 - 1) * 0.5) for x in range(0, width + 40, 40)]
        shade = tuple(int(255 * v) for v in colorsys.hsv_to_rgb((hue + 0.3) % 1, 0.6, 0.5 - 0.12 * layer))
        draw.polygon([(0, height), *points, (width, height)], fill=shade)
    cell = cell.filter(ImageFilter.SMOOTH)
    draw = ImageDraw.Draw(cell)
    number = _font(max(12, height // 4))
    draw.text((width * 0.05, height * 0.04), str(index), font=number, fill="white", stroke_width=3, stroke_fill="black")
    text = _font(max(10, height // 14))
    wrapped = textwrap.fill(caption, width=max(12, int(width / (height / 14) * 1.7)))
    box = draw.multiline_textbbox((0, 0), wrapped, font=text)
    x, y = width * 0.05, height - (box[3] - box[1]) - height * 0.06
    draw.rectangle((0, y - height * 0.03, width, height), fill=(0, 0, 0))
    draw.multiline_text((x, y), wrapped, font=text, fill="white")
    return cell


def render_storyboard(prompt: str, size: tuple[int, int], grid: tuple[int, int] | None = None) -> Image.Image:
    """A storyboard grid: one distinct captioned scene per cell, cells laid out as `split_grid` cuts them."""
    rows, cols = grid or grid_from_prompt(prompt)
    width, height = size
    board = Image.new("RGB", size, "black")
    for n, caption in enumerate(panel_captions(prompt, rows * cols), start=1):
        r, c = divmod(n - 1, cols)
        box = (c * width // cols, r * height // rows, (c + 1) * width // cols, (r + 1) * height // rows)
        board.paste(_scene(n, caption, (box[2] - box[0], box[3] - box[1])), box[:2])
    return board


# --- clips --------------------------------------------------------------------------------------

_MAX_CLIP_SIDE = 1280


@dataclass(frozen=True)
class ClipInfo:
    codec: str
    width: int
    height: int
    pix_fmt: str
    frames: int
    fps: float
    duration: float


def _ease(t: float) -> float:
    return t * t * (3 - 2 * t)  # smoothstep: starts and ends at rest


def _clip_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, _MAX_CLIP_SIDE / max(width, height))
    # H.264 in yuv420p needs even sizes; browsers need them too.
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def ken_burns_frames(image: Image.Image, frames: int, motion: str, zoom: float = 1.18) -> Iterator[Image.Image]:
    """Frames of an eased zoom and pan over `image`. Frame 0 is the whole image; `motion` picks
    the direction of the pan, so each panel moves its own way."""
    width, height = image.size
    out = _clip_size(width, height)
    seed = _seed(motion)
    # Where the final crop sits: one of the corners or edges, never the same for every prompt.
    ax, ay = ((seed >> 1) % 3) / 2, ((seed >> 3) % 3) / 2
    for i in range(frames):
        t = _ease(i / max(1, frames - 1))
        scale = 1 + (zoom - 1) * t
        w, h = width / scale, height / scale
        x0, y0 = (width - w) * ax * t, (height - h) * ay * t
        yield image.resize(out, Image.Resampling.BILINEAR, box=(x0, y0, x0 + w, y0 + h))


def render_clip(image_path: Path, dest: Path, duration: float, motion: str = "", fps: int = FPS) -> Path:
    """Animate a still into an H.264 MP4 of round(duration * fps) frames that plays in browsers."""
    with Image.open(image_path) as opened:
        image = opened.convert("RGB")
    frames = max(1, round(duration * fps))
    width, height = _clip_size(*image.size)
    with atomic_path(dest) as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=Fraction(fps))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            # Several clips render at once, one per worker: one encoder thread each.
            stream.options = {"preset": "veryfast", "crf": "20", "threads": "1"}
            for picture in ken_burns_frames(image, frames, motion):
                for packet in stream.encode(av.VideoFrame.from_image(picture)):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return dest


def probe_clip(path: Path) -> ClipInfo:
    """What a player sees in the file: codec, size, pixel format, and the frames it decodes."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        fps = float(stream.average_rate or 0)
        return ClipInfo(
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            pix_fmt=stream.codec_context.pix_fmt or "",
            frames=frames,
            fps=fps,
            duration=frames / fps if fps else 0.0,
        )


def first_frame(path: Path) -> Image.Image:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_image()


def last_frame(path: Path) -> Image.Image:
    with av.open(str(path)) as container:
        frame = None
        for frame in container.decode(video=0):
            pass
        if frame is None:
            raise ValueError(f"{path} has no video frames")
        return frame.to_image()
