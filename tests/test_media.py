"""Storyboards, panel cutting and clips, on real files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from storyboard_core import media
from storyboard_core.engines.base import ClipJob, ImageJob
from storyboard_core.engines.local import LocalEngine
from storyboard_core.registry import lookup


def labelled_grid(width: int, height: int, rows: int, cols: int) -> Image.Image:
    """An image whose pixel (x, y) encodes its cell: cell c starts at pixel c * width // cols."""
    xs = np.searchsorted([c * width // cols for c in range(1, cols)], np.arange(width), side="right")
    ys = np.searchsorted([r * height // rows for r in range(1, rows)], np.arange(height), side="right")
    cell = ys[:, None] * cols + xs[None, :]
    return Image.fromarray(np.stack([cell * 3, cell * 5, np.full_like(cell, 77)], axis=-1).astype(np.uint8))


@pytest.mark.parametrize(
    ("size", "grid"),
    [((1280, 720), (2, 2)), ((1200, 900), (3, 3)), ((1024, 256), (1, 4)), ((1001, 777), (3, 3)), ((643, 479), (2, 5))],
)
def test_split_grid_cuts_row_major_cells_covering_the_whole_image(tmp_path, size, grid):
    source = tmp_path / "board.png"
    labelled_grid(*size, *grid).save(source)
    panels = media.split_grid(source, grid)
    rows, cols = grid
    assert len(panels) == rows * cols
    assert sum(p.width for p in panels[:cols]) == size[0]
    assert sum(panels[r * cols].height for r in range(rows)) == size[1]
    for n, panel in enumerate(panels):
        pixels = np.asarray(panel)
        # Every pixel of panel n belongs to cell n: nothing of a neighbour, nothing dropped.
        assert (pixels[..., 0] == n * 3).all() and (pixels[..., 1] == n * 5).all()
        assert abs(panel.width - size[0] / cols) < 1 and abs(panel.height - size[1] / rows) < 1


def test_split_grid_refuses_an_image_smaller_than_the_grid(tmp_path):
    source = tmp_path / "tiny.png"
    Image.new("RGB", (3, 3)).save(source)
    with pytest.raises(ValueError, match="cannot be cut into a 4x4 grid"):
        media.split_grid(source, (4, 4))


@pytest.mark.parametrize("text", ["0x2", "9x1", "2", "2x2x2", "axb", "", "-1x3"])
def test_parse_grid_rejects_bad_grids_with_the_rule(text):
    with pytest.raises(ValueError, match=r"RxC.*1\.\.8"):
        media.parse_grid(text)


def test_parse_grid_accepts_every_grid_up_to_8x8():
    assert media.parse_grid("2x2") == (2, 2)
    assert media.parse_grid(" 8X1 ") == (8, 1)
    assert media.parse_grid("3×4") == (3, 4)


@pytest.mark.parametrize("suffix", ["png", "jpg", "webp"])
def test_save_image_writes_exactly_the_encoded_bytes(tmp_path, suffix):
    image = labelled_grid(200, 100, 2, 2)
    dest = media.save_image(image, tmp_path / f"panel.{suffix}")
    assert dest.read_bytes() == media.encode_image(image, suffix)
    assert Image.open(dest).size == (200, 100)
    assert [p.name for p in tmp_path.iterdir()] == [f"panel.{suffix}"]


def test_local_storyboard_has_one_distinct_captioned_panel_per_prompt_line(tmp_path):
    prompt = "A 3x3 grid:\n" + "\n".join(f"Panel {n}: scene number {n}" for n in range(1, 10))
    dest = tmp_path / "board.png"
    LocalEngine().text_to_image(lookup("text_to_image", "local"), ImageJob(prompt, {"aspect_ratio": "1:1"}), dest)
    board = Image.open(dest)
    assert board.size == (1280, 1280)
    panels = [np.asarray(p.convert("RGB").resize((400, 400)), dtype=float) for p in media.split_grid(dest, (3, 3))]
    for i in range(9):
        for j in range(i + 1, 9):
            assert np.abs(panels[i] - panels[j]).mean() > 10, (i, j)
    assert media.panel_captions(prompt, 10)[8:] == ["scene number 9", "Panel 10"]


@pytest.mark.parametrize(("aspect", "size"), [("16:9", (1280, 720)), ("9:16", (720, 1280)), ("4:3", (1280, 960))])
def test_storyboard_size_follows_the_aspect_ratio(aspect, size):
    assert media.storyboard_size(aspect) == size


def test_grid_from_prompt_reads_the_grid_or_counts_the_panels():
    assert media.grid_from_prompt("a 3x2 grid") == (3, 2)
    assert media.grid_from_prompt("Panel 1: a\nPanel 2: b\nPanel 3: c") == (2, 2)
    assert media.grid_from_prompt("Panel 9: last") == (3, 3)


def test_local_clip_is_browser_playable_h264_starting_on_its_panel_and_moving(tmp_path):
    panel = tmp_path / "scene_1.png"
    # An odd-sized panel: the clip must still have even sides.
    Image.open(media.save_image(media.render_storyboard("Panel 1: rooftop", (643, 361), (1, 1)), panel))
    clip = tmp_path / "scene_1.mp4"
    LocalEngine().image_to_video(lookup("image_to_video", "local"), ClipJob(panel, "stars twinkle", 2.5), clip)
    info = media.probe_clip(clip)
    assert (info.codec, info.pix_fmt, info.frames, info.fps) == ("h264", "yuv420p", 60, 24.0)
    assert (info.width, info.height) == (642, 360)
    source = np.asarray(Image.open(panel).convert("RGB").resize((642, 360)), dtype=float)
    first = np.asarray(media.first_frame(clip).convert("RGB"), dtype=float)
    last = np.asarray(media.last_frame(clip).convert("RGB"), dtype=float)
    assert np.abs(first - source).mean() < 6
    assert np.abs(last - source).mean() > 6  # the camera moved
    # faststart: the index comes before the media data, so browsers start playing at once.
    head = clip.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".mp4"] == ["scene_1.mp4"]


def test_a_failed_render_leaves_no_file_under_the_final_name(tmp_path):
    not_an_image = tmp_path / "panel.png"
    not_an_image.write_text("not a png")
    with pytest.raises(Exception):
        media.render_clip(not_an_image, tmp_path / "clip.mp4", 1.0)
    assert list(tmp_path.iterdir()) == [not_an_image]
