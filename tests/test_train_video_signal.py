"""The video path carries information into the LLM: with text identical across emotions and the emotion visible
only as the clip's colour, REP with video predicts the response emotion well above chance and above the same run
without video (which can only guess one label for every sample)."""

from __future__ import annotations

import pytest
from elmd_sdk.trainers.examples import PromptConfig
from elmd_sdk.trainers.rep import RepConfig, train_rep
from elmd_sdk.trainers.stage import TrainConfig
from train_fakes import COLOURS, ColourEncoder, colour_samples, save_tiny_llm, write_colour_video

LABELS = tuple(COLOURS)  # happy = red, sad = blue, anger = green


def _shade(rgb: tuple[int, int, int], delta: int) -> tuple[int, int, int]:
    r, g, b = rgb
    return (r + delta, g + delta, b + delta)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, list]:
    root = tmp_path_factory.mktemp("video_signal")
    llm = save_tiny_llm(root / "llm")
    train_videos = {e: write_colour_video(root / f"train_{e}.mp4", _shade(c, -10)) for e, c in COLOURS.items()}
    valid_videos = {e: write_colour_video(root / f"valid_{e}.mp4", _shade(c, 10)) for e, c in COLOURS.items()}
    train = colour_samples(train_videos, 4, "t")  # 12 samples
    valid = colour_samples(valid_videos, 3, "v")  # 9 samples, other clips of other shades
    out: dict[bool, list] = {}
    for use_video in (True, False):
        config = RepConfig(
            llm=str(llm),
            frames=16,
            feature_cache=str(root / "cache"),
            prompt=PromptConfig(labels=LABELS, use_video=use_video),
            train=TrainConfig(epochs=6, batch_size=6, seed=0, progress=False),
            lr=0.2,
        )
        # No demonstrations: the texts are identical, so a retrieved exchange would only carry another
        # sample's label; this test isolates what the video path carries.
        result = train_rep(config, train, valid, root / f"rep_{use_video}", visual_encoder=ColourEncoder())
        out[use_video] = result.history
    return out


def test_rep_with_video_beats_chance_and_the_run_without_video(results: dict[bool, list]) -> None:
    with_video, without = results[True][-1], results[False][-1]
    assert with_video.valid_accuracy >= 0.85 and with_video.valid_macro_f1 >= 0.85
    assert without.valid_accuracy == pytest.approx(1 / 3)  # identical prompts: one label for all
    assert with_video.valid_accuracy > without.valid_accuracy + 0.4


def test_without_video_nothing_trains(results: dict[bool, list]) -> None:
    [only] = results[False]
    assert only.epoch == 0 and only.global_step == 0 and only.train_loss is None


def test_accuracy_improves_over_epochs(results: dict[bool, list]) -> None:
    history = results[True]
    assert [h.epoch for h in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1].valid_accuracy > history[0].valid_accuracy
    assert history[-1].train_loss < history[0].train_loss
