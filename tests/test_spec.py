"""Pipeline files: the example works as written; every mistake is named with file, step and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from storyboard_core.spec import PipelineError, load_pipeline

ROOT = Path(__file__).resolve().parent.parent
LOVE_STORY = ROOT / "input/pipelines/storyboard/love_story_parallel_test.yaml"


def love_story() -> dict:
    return yaml.safe_load(LOVE_STORY.read_text())


def write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "pipe.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def problems_of(tmp_path: Path, data: dict | str) -> list[str]:
    path = write(tmp_path, data)
    with pytest.raises(PipelineError) as caught:
        load_pipeline(path)
    for problem in caught.value.problems:
        assert str(path) in problem
    return caught.value.problems


def test_love_story_example_loads_as_written():
    spec = load_pipeline(LOVE_STORY)
    assert [s.kind for s in spec.steps] == ["text_to_image", "split_image", "image_to_video"]
    assert [s.outputs for s in spec.steps] == [1, 4, 4]
    animate = spec.steps[2].params
    assert animate.parallel and animate.workers == 4
    assert [animate.prompt_for(i) for i in range(4)][1] == "Leaves fall around them, hands brush, laughter"
    assert spec.steps[1].params.panel_name(3) == "scene_3"
    assert spec.output_dir == Path("output/love_story_parallel_test")


def test_defaults_max_workers_four_and_sequential():
    data = love_story()
    data["steps"][2]["params"] = {"prompt": "gentle motion", "duration": "5"}
    spec = load_pipeline(write(Path(__import__("tempfile").mkdtemp()), data))
    params = spec.steps[2].params
    assert params.max_workers == 4 and params.parallel is False and params.workers == 1
    assert params.prompt_for(3) == "gentle motion"


def test_missing_prompts_fall_back_to_default_prompt(tmp_path):
    data = love_story()
    data["steps"][2]["params"]["prompts"] = ["only the first"]
    data["steps"][2]["params"]["prompt"] = "default motion"
    params = load_pipeline(write(tmp_path, data)).steps[2].params
    assert [params.prompt_for(i) for i in range(4)] == ["only the first"] + ["default motion"] * 3


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["steps"][1].update(type="crop_image"), ['step 2 "split_scenes"', "field type", "text_to_image, split_image, image_to_video"]),
        (lambda d: d["steps"][2].update(model="kling_9"), ['step 3 "animate_parallel"', "field model", "kling_2_6_pro", "local"]),
        (lambda d: d["steps"][0].update(model="nano_banana"), ['step 1 "generate_storyboard"', "field model", "nano_banana_pro"]),
        (lambda d: d["steps"][1]["params"].update(grid="9x2"), ['step 2 "split_scenes"', "field params.grid", "1..8"]),
        (lambda d: d["steps"][1]["params"].update(grid="two by two"), ["field params.grid", "RxC"]),
        (lambda d: d["steps"][1]["params"].update(naming="scene"), ["field params.naming", "{n}"]),
        (lambda d: d["steps"][1]["params"].update(naming="../x_{n}"), ["field params.naming", "plain file name"]),
        (lambda d: d["steps"][1]["params"].update(output_format="gif"), ["field params.output_format", "png", "webp"]),
        (lambda d: d["steps"][2]["params"].update(max_workers=0), ['step 3 "animate_parallel"', "field params.max_workers"]),
        (lambda d: d["steps"][2]["params"].update(max_workers=65), ["field params.max_workers", "64"]),
        (lambda d: d["steps"][2]["params"].update(parallel="sometimes"), ["field params.parallel"]),
        (lambda d: d["steps"][2]["params"].update(duration="12"), ["field params.duration", "5, 10"]),
        (lambda d: d["steps"][2]["params"].update(loop=True), ["field params.loop", "negative_prompt"]),
        (lambda d: d["steps"][2]["params"]["prompts"].append("a fifth"), ["field params.prompts", "5 prompts for 4 panels"]),
        (lambda d: d["steps"][0]["params"].update(aspect_ratio="2:1"), ["field params.aspect_ratio", "16:9"]),
        (lambda d: d["steps"][2].update(retries=-1), ["field retries"]),
        (lambda d: d["steps"][2].update(name="split_scenes"), ['step 3 "split_scenes"', "unique"]),
        (lambda d: d["steps"][2].update(name="a/b"), ["field name", "folder"]),
        (lambda d: d["steps"][2].update(colour="red"), ["field colour", "unknown field"]),
        (lambda d: d["steps"][2].pop("model"), ["step 3", "field model", "required"]),
        (lambda d: d.update(colour="red"), ["field colour", "unknown field"]),
        (lambda d: d.pop("name"), ["field name", "required"]),
        (lambda d: d.update(steps=[]), ["field steps"]),
        (lambda d: d.update(steps=[d["steps"][2]]), ['step 1 "animate_parallel"', "needs an image"]),
        (lambda d: d.update(input="missing.png"), ["field input", "missing.png"]),
        (lambda d: d.pop("prompt"), ['step 1 "generate_storyboard"', "field params.prompt"]),
        (lambda d: [s.update(enabled=False) for s in d["steps"]], ["every step is disabled"]),
        (lambda d: d["steps"].__setitem__(1, "split"), ["step 2", "mapping"]),
    ],
)
def test_each_mistake_names_file_step_and_field(tmp_path, change, expected):
    data = love_story()
    change(data)
    text = "\n".join(problems_of(tmp_path, data))
    for fragment in expected:
        assert fragment in text


def test_all_problems_reported_at_once(tmp_path):
    data = love_story()
    data["steps"][1]["params"]["grid"] = "0x2"
    data["steps"][2]["params"]["max_workers"] = 100
    data["steps"][2]["model"] = "nope"
    problems = problems_of(tmp_path, data)
    assert len(problems) == 2  # step 3 stops at its unknown model; step 2's grid is reported too
    assert any("params.grid" in p for p in problems) and any("field model" in p for p in problems)


def test_yaml_syntax_error_names_line(tmp_path):
    problems = problems_of(tmp_path, "name: x\nsteps:\n  - name: a\n   type: b\n")
    assert "not valid YAML at line" in problems[0]


def test_missing_file_is_a_pipeline_error(tmp_path):
    with pytest.raises(PipelineError) as caught:
        load_pipeline(tmp_path / "nope.yaml")
    assert "nope.yaml" in caught.value.problems[0] and "cannot read" in caught.value.problems[0]


def test_pipeline_can_start_from_an_input_image(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 36), "red").save(tmp_path / "board.png")
    data = love_story()
    data.pop("prompt")
    data["input"] = "board.png"
    data["steps"] = data["steps"][1:]
    spec = load_pipeline(write(tmp_path, data))
    assert spec.input == (tmp_path / "board.png").resolve()
    assert [s.kind for s in spec.steps] == ["split_image", "image_to_video"]


def test_disabled_steps_are_skipped_but_still_checked(tmp_path):
    data = love_story()
    data["steps"][2]["enabled"] = False
    assert [s.name for s in load_pipeline(write(tmp_path, data)).steps] == ["generate_storyboard", "split_scenes"]
    data["steps"][2]["params"]["max_workers"] = 0
    assert any("max_workers" in p for p in problems_of(tmp_path, data))
