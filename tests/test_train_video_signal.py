"""The video path carries information into the LLM: with text identical across emotions and the emotion visible
only as the clip's colour, REP with video predicts the response emotion well above chance and above the frozen LLM on
the text alone (which can only guess one label for every sample)."""

from __future__ import annotations

from typing import Any

import pytest
from train_fakes import COLOURS, ColourEncoder, colour_samples, save_tiny_llm, write_colour_video

from elmd_sdk.models.llm import load_llm
from elmd_sdk.trainers.emotion_eval import emotion_metrics, score_examples
from elmd_sdk.trainers.examples import PromptConfig, build_examples, label_candidates
from elmd_sdk.trainers.rep import RepConfig, train_rep
from elmd_sdk.trainers.stage_model import StageModel
from elmd_sdk.trainers.train_config import TrainConfig

LABELS = tuple(COLOURS)  # happy = red, sad = blue, anger = green


def _shade(rgb: tuple[int, int, int], delta: int) -> tuple[int, int, int]:
    r, g, b = rgb
    return (r + delta, g + delta, b + delta)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("video_signal")
    llm = save_tiny_llm(root / "llm", seed=3)  # a random LLM that can pass the projector's signal on; not all can
    train_videos = {e: write_colour_video(root / f"train_{e}.mp4", _shade(c, -10)) for e, c in COLOURS.items()}
    valid_videos = {e: write_colour_video(root / f"valid_{e}.mp4", _shade(c, 10)) for e, c in COLOURS.items()}
    train = colour_samples(train_videos, 4, "t")  # 12 samples
    valid = colour_samples(valid_videos, 3, "v")  # 9 samples, other clips of other shades
    config = RepConfig(
        llm=str(llm),
        frames=16,
        feature_cache=str(root / "cache"),
        prompt=PromptConfig(labels=LABELS),
        train=TrainConfig(epochs=6, batch_size=6, seed=0, progress=False),
        lr=0.1,
    )
    # No demonstrations: the texts are identical, so a retrieved exchange would only carry another
    # sample's label; this test isolates what the video path carries.
    history = train_rep(config, train, valid, root / "rep", visual_encoder=ColourEncoder()).history
    # Without video (REP then has nothing to train and refuses): the frozen LLM's closed-set choice on the text alone.
    model, tokenizer = load_llm(str(llm))
    text_only = PromptConfig(labels=LABELS, use_video=False)
    examples = build_examples(valid, [None] * len(valid), tokenizer, text_only, with_response=False, video_tokens=0)
    scored = score_examples(
        StageModel(model, None), examples, range(len(examples)), label_candidates(tokenizer, text_only), lambda _: None
    )
    without = emotion_metrics([s.gold for s in scored], [s.predicted for s in scored])
    return {"with_video": history, "without_video": without}


def test_rep_with_video_beats_chance_and_the_text_alone(results: dict[str, Any]) -> None:
    with_video = results["with_video"][-1]
    accuracy, _ = results["without_video"]
    assert with_video.valid_accuracy >= 0.85 and with_video.valid_macro_f1 >= 0.85
    assert accuracy == pytest.approx(1 / 3)  # identical prompts: one label for all
    assert with_video.valid_accuracy > accuracy + 0.4


def test_losses_fall_over_epochs(results: dict[str, Any]) -> None:
    history = results["with_video"]
    assert [h.epoch for h in history] == [1, 2, 3, 4, 5, 6]
    # The calibrated choice separates the colours from the first epoch on (its prior removes the label bias the
    # raw choice still has then); what training keeps improving is the likelihood of the right answer.
    assert history[-1].valid_loss < history[0].valid_loss - 0.3
    assert history[-1].valid_accuracy >= history[0].valid_accuracy
    assert history[-1].train_loss < history[0].train_loss
