"""REP (Eq. 10) and EERG (Eq. 11) on a tiny random Llama and a colour encoder: what trains, losses, resume, bundles."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate.utils import set_seed
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from retriever_fakes import HashEncoder
from train_fakes import COLOURS, ColourEncoder, colour_samples, save_tiny_llm, write_colour_video

from elmd_sdk.bundle import load_bundle, verify_components
from elmd_sdk.chains.prompt import build_prompt
from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.io import load_tensors, read_json, save_tensors
from elmd_sdk.models import llm_fingerprint, load_llm, prefix_encoder_of
from elmd_sdk.models.chat_model import ELMDChatModel
from elmd_sdk.models.prefix import PrefixConfig, PrefixEncoder, attach_prefix
from elmd_sdk.models.splice import splice_video_embeds
from elmd_sdk.retrievers import EmotionalRetriever, build_index
from elmd_sdk.trainers import checkpoint as checkpoint_module
from elmd_sdk.trainers.eerg import EergConfig, train_eerg
from elmd_sdk.trainers.emotion_eval import score_examples
from elmd_sdk.trainers.examples import PromptConfig, build_examples, label_candidates, prompt_messages
from elmd_sdk.trainers.feature_cache import FeatureCache
from elmd_sdk.trainers.metrics_log import METRICS_FILE, read_metrics
from elmd_sdk.trainers.pipeline import samples_sha256
from elmd_sdk.trainers.rep import RepConfig, train_rep
from elmd_sdk.trainers.stage import StageResult
from elmd_sdk.trainers.stage_model import StageModel
from elmd_sdk.trainers.train_config import TrainConfig, default_mixed_precision
from elmd_sdk.video import ProjectorConfig, VideoProjector, spatio_temporal_pool
from elmd_sdk.video import tokens as video_tokens

LABELS = ("happy", "sad", "anger")
FRAMES = 4

DEMO = Document(page_content="I see.", metadata={"utterance": "It rained all day.", "response_emotion": "sad"})


@dataclass
class Env:
    """Tiny LLM folder, coloured clips, samples (text identical across emotions) and their demonstration index."""

    root: Path
    llm: Path
    train: list[Sample]
    valid: list[Sample]
    index: Path

    def retriever(self) -> EmotionalRetriever:
        return EmotionalRetriever.load(self.index, encoder=HashEncoder())


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("stages")
    videos = {label: write_colour_video(root / f"{label}.mp4", rgb) for label, rgb in COLOURS.items()}
    train = colour_samples(videos, 2, "t")
    build_index(HashEncoder(), train, root / "index")
    return Env(root, save_tiny_llm(root / "llm"), train, colour_samples(videos, 1, "v"), root / "index")


def _train(**overrides: Any) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 3, "progress": False, "checkpoint_every": 1, **overrides})


def _rep(env: Env, out: Path, resume: bool = False, **overrides: Any) -> StageResult:
    config = RepConfig(
        index=str(env.index),
        llm=str(env.llm),
        frames=FRAMES,
        feature_cache=str(env.root / "cache"),
        prompt=PromptConfig(labels=LABELS),
        train=_train(**overrides),
        lr=0.2,
    )
    encoder, retriever = ColourEncoder(), env.retriever()
    return train_rep(config, env.train, env.valid, out, resume=resume, visual_encoder=encoder, retriever=retriever)


def _eerg_config(env: Env, rep_out: Path | None, **overrides: Any) -> EergConfig:
    """EERG from the REP bundle ``rep_out`` (None: without REP)."""
    fields = {
        "from_bundle": str(rep_out) if rep_out else None,
        "frames": FRAMES,
        "feature_cache": str(env.root / "cache"),
        "lr": 0.05,
    }
    engine = {k: overrides.pop(k) for k in list(overrides) if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    return EergConfig(**{**fields, **overrides}, train=_train(**engine))


def _eerg(env: Env, config: EergConfig, out: Path, encoder: ColourEncoder | None = None, **kw: Any) -> StageResult:
    encoder = encoder or ColourEncoder()
    return train_eerg(config, env.train, env.valid, out, visual_encoder=encoder, retriever=env.retriever(), **kw)


def _fresh_llm(env: Env) -> Any:
    return load_llm(str(env.llm.resolve()), dtype=torch.float32)[0]


@dataclass
class Run:
    """A finished stage: its result, bundle folder, and how many times a video was decoded during it."""

    result: StageResult
    out: Path
    decoded: int = 0


@pytest.fixture(scope="module")
def rep_run(env: Env) -> Run:
    out, calls = env.root / "rep", []
    with pytest.MonkeyPatch.context() as patch:
        original = video_tokens.sample_frames  # the feature cache decodes clips through elmd_sdk.video.tokens
        patch.setattr(video_tokens, "sample_frames", lambda *a, **k: calls.append(a) or original(*a, **k))
        result = _rep(env, out)  # the first run on an empty feature cache
    return Run(result, out, len(calls))


@pytest.fixture(scope="module")
def prefix_init(env: Env) -> Path:
    """A p-tuning checkpoint in ChatGLM2's official layout (only transformer.prefix_encoder.* weights)."""
    folder = env.root / "chatglm2_ptuning"
    torch.manual_seed(5)
    save_tensors(folder / "model.safetensors", {"transformer.prefix_encoder.embedding.weight": torch.randn(4, 64)})
    return folder


@pytest.fixture(scope="module")
def eerg_run(env: Env, rep_run: Run, prefix_init: Path) -> Run:
    out = env.root / "eerg"
    return Run(_eerg(env, _eerg_config(env, rep_run.out, prefix_init=str(prefix_init), epochs=3), out), out)


def _examples(env: Env, tokenizer: Any, samples: list[Sample], with_response: bool) -> list[Any]:
    demos = [DEMO] * len(samples)
    return build_examples(
        samples, demos, tokenizer, PromptConfig(labels=LABELS), with_response=with_response, video_tokens=FRAMES + 2
    )


def _glm_with_prefix(vocab_size: int) -> Any:
    """ChatGLM2's transformers-native architecture (GLM, 2 multi-query key/value groups) with a p-tuning prefix."""
    from transformers import GlmConfig, GlmForCausalLM

    torch.manual_seed(0)
    config = GlmConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, partial_rotary_factor=0.5, max_position_embeddings=512,
        initializer_range=0.2, pad_token_id=0, eos_token_id=1, bos_token_id=1,
    )  # fmt: skip
    llm = GlmForCausalLM(config).eval()
    attach_prefix(llm, PrefixEncoder(PrefixConfig.for_model(llm, pre_seq_len=3)).eval())
    return llm


@pytest.mark.parametrize("architecture", ["llama", "glm_with_prefix"])
def test_nll_is_the_cross_entropy_of_the_answer_tokens(env: Env, architecture: str) -> None:
    llm, tokenizer = load_llm(str(env.llm), dtype=torch.float32)
    if architecture == "glm_with_prefix":
        llm = _glm_with_prefix(len(tokenizer))
        assert prefix_encoder_of(llm).config.num_kv_heads == 2  # type: ignore[union-attr]
    no_video = dataclasses.replace(env.train[1], video=None)
    examples = _examples(env, tokenizer, [env.train[0], no_video], with_response=True)
    torch.manual_seed(0)
    model = StageModel(llm, VideoProjector(ProjectorConfig(q=4, hidden_size=32))).eval()
    cache = FeatureCache(ColourEncoder(), FRAMES, env.root / "unit_cache")
    videos = [spatio_temporal_pool(cache.get(examples[0].video)), None]  # (m + o, q)
    with torch.no_grad():
        nll = model([e.pieces for e in examples], videos, [e.target for e in examples])
    total = torch.zeros(())
    for row, (example, video) in enumerate(zip(examples, videos, strict=True)):
        pieces = [list(p) for p in example.pieces]
        pieces[-1] += list(example.target)
        spliced = splice_video_embeds(
            llm.get_input_embeddings(), pieces, [] if video is None else [model.video_tokens(video)]
        )
        logits = llm(inputs_embeds=spliced.inputs_embeds).logits[0]  # (T, vocab): unpadded, positions 0..T-1
        start = logits.shape[0] - len(example.target) - 1
        by_hand = -sum(torch.log_softmax(logits[start + j], -1)[token] for j, token in enumerate(example.target))
        assert nll[row].item() == pytest.approx(by_hand.item(), abs=1e-4)
        total = total + by_hand
    assert examples[1].video is None and len(examples[0].pieces) == 2
    trained = [model.projector.linear.weight]
    if (prefix := prefix_encoder_of(llm)) is not None:
        trained.append(prefix.embedding.weight)
    by_hand_grads = torch.autograd.grad(total, trained)  # the gradient of the summed by-hand NLL
    assert all(g.abs().sum() > 0 for g in by_hand_grads)
    model([e.pieces for e in examples], videos, [e.target for e in examples]).sum().backward()
    for parameter, expected in zip(trained, by_hand_grads, strict=True):
        torch.testing.assert_close(parameter.grad, expected, atol=1e-5, rtol=1e-4)


def test_training_inputs_equal_what_the_chat_model_feeds_the_llm(env: Env) -> None:
    llm, tokenizer = load_llm(str(env.llm), dtype=torch.float32)
    torch.manual_seed(0)
    projector = VideoProjector(ProjectorConfig(q=4, hidden_size=32))
    sample = env.valid[1]
    [example] = _examples(env, tokenizer, [sample], with_response=False)
    messages: list[BaseMessage] = prompt_messages(build_prompt("en", LABELS), sample, DEMO, True, "en")
    seen: list[torch.Tensor] = []
    hook = llm.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"].detach().clone()), with_kwargs=True
    )
    chat = ELMDChatModel(
        hf_model=llm, tokenizer=tokenizer, projector=projector, visual_encoder=ColourEncoder(), frames=FRAMES
    )
    try:
        chat.invoke(messages, do_sample=False, max_new_tokens=1)
    finally:
        hook.remove()
    cache = FeatureCache(ColourEncoder(), FRAMES, env.root / "unit_cache")
    with torch.no_grad():
        e_v = projector(spatio_temporal_pool(cache.get(example.video)))  # (m + o, hidden)
        training = splice_video_embeds(llm.get_input_embeddings(), [list(p) for p in example.pieces], [e_v])
    torch.testing.assert_close(seen[0], training.inputs_embeds, rtol=0, atol=0)


def test_rep_trains_only_the_projector_and_writes_a_bundle(env: Env, rep_run: Run) -> None:
    result, out = rep_run.result, rep_run.out
    fresh = _fresh_llm(env)
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(result.model.llm.state_dict()[name], tensor), name
    set_seed(0)
    initial = VideoProjector(ProjectorConfig(q=4, hidden_size=32))  # what train_rep starts from with seed 0
    assert not torch.equal(initial.linear.weight, result.model.projector.linear.weight.cpu())
    losses = [h.train_loss for h in result.history]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert rep_run.decoded == len({s.video for s in [*env.train, *env.valid]}) == 6  # once per clip, not per epoch
    assert all(h.valid_accuracy is not None and h.valid_macro_f1 is not None for h in result.history)
    manifest, paths = load_bundle(out)
    assert manifest.labels == list(LABELS) and manifest.language == "en" and manifest.prefix_dir is None
    assert manifest.frames == FRAMES  # m the projector was trained with; a chain loaded from the bundle samples as many
    assert manifest.base_llm == str(env.llm.resolve())
    assert manifest.base_llm_config_sha256 == llm_fingerprint(fresh)["config_sha256"]
    assert manifest.visual_encoder_fingerprint == ColourEncoder().fingerprint()
    assert manifest.training_data_sha256 == samples_sha256(env.train)
    assert paths.index is not None and (paths.index / "index.json").is_file() and paths.erm is None
    saved = VideoProjector.load(paths.projector, encoder=ColourEncoder().fingerprint(), llm=llm_fingerprint(fresh))
    assert torch.equal(saved.linear.weight, result.model.projector.linear.weight.cpu())
    assert not (out / "checkpoint").exists() and (out / "training.json").is_file()
    again = _rep(env, out, resume=True)  # as if killed after the bundle was complete: nothing left to train
    assert again.history == result.history and again.completed
    assert torch.equal(again.model.projector.linear.weight, saved.linear.weight)


def test_eerg_trains_only_prefix_and_projector_without_decoding_video(
    env: Env, rep_run: Run, eerg_run: Run, prefix_init: Path, monkeypatch
) -> None:
    result, out = eerg_run.result, eerg_run.out
    llm = result.model.llm
    fresh = _fresh_llm(env)
    base = {k: v for k, v in llm.state_dict().items() if not k.startswith("prefix_encoder.")}
    assert base.keys() == fresh.state_dict().keys()
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in base.items())
    start = load_tensors(prefix_init / "model.safetensors")["transformer.prefix_encoder.embedding.weight"]
    trained = prefix_encoder_of(llm)
    assert trained is not None and trained.embedding.weight.shape == start.shape
    assert not torch.equal(trained.embedding.weight.detach().cpu(), start)
    assert not torch.equal(result.model.projector.linear.weight, rep_run.result.model.projector.linear.weight)
    losses = [h.train_loss for h in result.history]
    assert losses[-1] < losses[0]
    manifest, paths = load_bundle(out)
    assert manifest.pre_seq_len == 4 and paths.prefix is not None and paths.projector is not None

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("video decoded again")

    monkeypatch.setattr(video_tokens, "sample_frames", fail)  # every clip is cached by now: another stage runs
    again = _eerg(env, _eerg_config(env, rep_run.out, epochs=1, pre_seq_len=2), env.root / "eerg_cached")
    assert again.completed


def test_eerg_without_video_trains_the_prefix_alone(env: Env, rep_run: Run) -> None:
    out = env.root / "eerg_no_video"
    result = _eerg(env, _eerg_config(env, rep_run.out, use_video=False, epochs=1, pre_seq_len=2), out)
    assert result.model.projector is None and result.completed
    manifest, paths = load_bundle(out)
    assert paths.projector is None and manifest.visual_encoder_fingerprint is None and manifest.pre_seq_len == 2


def test_eerg_without_rep_starts_from_a_fresh_projector_and_says_so(env: Env, eerg_run: Run) -> None:
    out = env.root / "eerg_no_rep"
    config = _eerg_config(env, None, index=str(env.index), llm=str(env.llm), labels=LABELS, pre_seq_len=2)
    result = _eerg(env, config, out)
    losses = [h.train_loss for h in result.history]
    assert result.completed and losses[-1] < losses[0]
    manifest, paths = load_bundle(out)
    assert paths.projector is not None and paths.prefix is not None and paths.index is not None
    assert manifest.labels == list(LABELS) and manifest.base_llm == str(env.llm.resolve())
    assert manifest.description.endswith("without REP, from a freshly initialised projector")
    identity = read_json(out / "training.json")["identity"]
    assert identity["from_rep"] is False and identity["rep_projector"] is None
    assert read_json(eerg_run.out / "training.json")["identity"]["from_rep"] is True


def test_eerg_without_rep_needs_an_index_or_no_retrieval(env: Env, rep_run: Run) -> None:
    with pytest.raises(InputError, match=r"without a REP bundle to start from \(--from\), give .*--index"):
        _eerg_config(env, None).validate()
    with pytest.raises(InputError, match="exclude each other"):
        _eerg_config(env, None, index=str(env.index), use_retrieval=False).validate()
    _eerg_config(env, None, use_retrieval=False).validate()
    with pytest.raises(InputError, match="field 'labels'"):
        _eerg(env, _eerg_config(env, rep_run.out, labels=("happy", "sad")), env.root / "eerg_other_labels")
    with pytest.raises(InputError, match="field 'frames'"):
        _eerg(env, _eerg_config(env, rep_run.out, frames=FRAMES + 1), env.root / "eerg_other_frames")


def test_bundle_round_trip_reproduces_the_training_scores(env: Env, eerg_run: Run) -> None:
    result, out = eerg_run.result, eerg_run.out
    manifest, paths = load_bundle(out)
    llm, tokenizer = load_llm(paths.base_llm, prefix=paths.prefix, dtype=torch.float32)
    encoder = ColourEncoder()
    fingerprint = llm_fingerprint(llm)
    prefix = prefix_encoder_of(llm)
    assert prefix is not None
    verify_components(
        manifest,
        llm_fingerprint=fingerprint,
        visual_encoder_fingerprint=encoder.fingerprint(),
        pre_seq_len=prefix.config.pre_seq_len,
    )
    projector = VideoProjector.load(paths.projector, encoder=encoder.fingerprint(), llm=fingerprint)
    loaded = StageModel(llm, projector).eval()
    examples = _examples(env, tokenizer, env.valid, with_response=True)
    cache = FeatureCache(encoder, FRAMES, env.root / "unit_cache")
    candidates = label_candidates(tokenizer, PromptConfig(labels=LABELS))

    def features(video: Any) -> torch.Tensor:
        return spatio_temporal_pool(cache.get(video))

    indices = list(range(len(examples)))
    after = score_examples(loaded, examples, indices, candidates, features)
    during = score_examples(result.model.eval(), examples, indices, candidates, features)
    assert [s.predicted for s in after] == [s.predicted for s in during]
    assert [s.nll for s in after] == pytest.approx([s.nll for s in during], abs=1e-5)


def test_bundles_made_for_another_model_encoder_or_prefix_length_are_refused(
    env: Env, rep_run: Run, eerg_run: Run
) -> None:
    other = save_tiny_llm(env.root / "other_llm", layers=3)
    with pytest.raises(MismatchError, match="base_llm_config_sha256"):
        _eerg(env, _eerg_config(env, rep_run.out, llm=str(other)), env.root / "eerg_other_llm")
    with pytest.raises(MismatchError, match="visual_encoder_fingerprint"):
        _eerg(env, _eerg_config(env, rep_run.out), env.root / "eerg_other_enc", encoder=ColourEncoder(salt="x"))
    manifest, paths = load_bundle(eerg_run.out)
    with pytest.raises(MismatchError, match="pre_seq_len"):
        verify_components(manifest, pre_seq_len=8)
    with pytest.raises(MismatchError, match="base_llm_config_sha256"):
        verify_components(manifest, llm_fingerprint=llm_fingerprint(load_llm(str(other))[0]))
    with pytest.raises(MismatchError):
        load_llm(str(other), prefix=paths.prefix)


def test_accumulation_and_checkpointing_give_the_full_batch_update(env: Env, tmp_path: Path) -> None:
    whole = _rep(env, tmp_path / "whole", epochs=1, batch_size=6)
    accumulated = _rep(env, tmp_path / "accumulated", epochs=1, batch_size=6, grad_accum=3)
    recomputed = _rep(env, tmp_path / "recomputed", epochs=1, batch_size=6, gradient_checkpointing=True)
    for other in (accumulated, recomputed):
        torch.testing.assert_close(
            whole.model.projector.linear.weight, other.model.projector.linear.weight, rtol=0, atol=1e-6
        )
    with pytest.raises(InputError, match="multiple of processes x grad_accum"):
        _rep(env, tmp_path / "bad", batch_size=4, grad_accum=3)


class Killed(Exception):
    """Stands for the process dying."""


@pytest.fixture(scope="module")
def uninterrupted(env: Env, rep_run: Run) -> Path:
    out = env.root / "eerg_reference"
    _eerg(env, _eerg_config(env, rep_run.out), out)
    return out


@pytest.mark.parametrize("moment", ["forward", "checkpoint_write"])
def test_killed_run_resumes_to_the_uninterrupted_weights(
    env: Env, rep_run: Run, uninterrupted: Path, tmp_path: Path, monkeypatch, moment: str
) -> None:
    out = tmp_path / "eerg"
    calls = {"n": 0}
    with monkeypatch.context() as patch:
        if moment == "forward":  # dies in the middle of step 3 (calls: step 1, step 2, validation, step 3)
            original = StageModel.forward

            def forward(self: StageModel, *args: Any) -> torch.Tensor:
                calls["n"] += 1
                if calls["n"] == 4:
                    raise Killed
                return original(self, *args)

            patch.setattr(StageModel, "forward", forward)
        else:  # dies between the tensor file and the JSON of the third checkpoint
            original_write = checkpoint_module.atomic_write_json

            def write(path: Path, obj: Any) -> None:
                calls["n"] += 1
                if calls["n"] == 3:
                    raise Killed
                original_write(path, obj)

            patch.setattr(checkpoint_module, "atomic_write_json", write)
        with pytest.raises(Killed):
            _eerg(env, _eerg_config(env, rep_run.out), out)
    with pytest.raises(InputError, match="unfinished run"):
        _eerg(env, _eerg_config(env, rep_run.out), out)
    with pytest.raises(MismatchError, match="lr"):
        _eerg(env, _eerg_config(env, rep_run.out, lr=0.01), out, resume=True)
    resumed = _eerg(env, _eerg_config(env, rep_run.out), out, resume=True)
    assert resumed.completed and [h.epoch for h in resumed.history] == [1, 2]
    for part, weights in (("prefix", "prefix.safetensors"), ("projector", "projector.safetensors")):
        expected, got = load_tensors(uninterrupted / part / weights), load_tensors(out / part / weights)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), part


def test_rep_without_clips_refuses_before_loading_anything(env: Env, tmp_path: Path) -> None:
    """MELD here ships no clips: REP has nothing to train and says so instead of failing in backward."""
    import dataclasses

    no_clips = [dataclasses.replace(sample, video=None) for sample in env.train]
    config = RepConfig(llm=str(tmp_path / "never_loaded"), prompt=PromptConfig(labels=LABELS), train=_train())
    with pytest.raises(InputError, match="none of the 6 samples has a video: there is nothing to train") as error:
        train_rep(config, no_clips, [], tmp_path / "rep")
    assert error.value.field == "data"
    off = dataclasses.replace(config, prompt=PromptConfig(labels=LABELS, use_video=False))
    with pytest.raises(InputError, match="--no-video is set"):
        train_rep(off, env.train, [], tmp_path / "rep")
    assert not (tmp_path / "rep").exists()


def test_resume_without_a_checkpoint_says_so(env: Env, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing to resume: no checkpoint"):
        _rep(env, tmp_path / "never_started", resume=True)


def _lines(out: Path, kind: str) -> list[dict[str, Any]]:
    return [m for m in read_metrics(out / METRICS_FILE) if m["kind"] == kind]


def test_validation_scores_the_calibrated_choice_that_inference_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from accelerate import Accelerator

    from elmd_sdk.trainers import stage as stage_module
    from elmd_sdk.trainers.emotion_eval import ScoredExample

    scores = [(0.0, -1.0), (0.0, -2.0), (0.0, -0.2), (-3.0, 0.0)]  # label log-likelihoods; raw choice 0, 0, 0, 1
    gold = [0, 1, 1, 1]
    scored = [ScoredExample(i, s, g, nll=1.0 + i, tokens=2) for i, (s, g) in enumerate(zip(scores, gold, strict=True))]
    monkeypatch.setattr(stage_module, "score_examples", lambda *args: scored)
    valid = SimpleNamespace(model=torch.nn.Linear(1, 1), valid=scored, candidates=[[1], [2]], video_features=None)
    result = stage_module._validate(Accelerator(cpu=True), valid)  # type: ignore[arg-type]
    p = [sum(1 / (1 + math.exp(s[1 - k] - s[k])) for s in scores) / 4 for k in (0, 1)]  # mean p(label): .552, .448
    assert result.log_prior == pytest.approx((math.log(p[0]), math.log(p[1])))
    # Calibrated: 0 - log .552 = .594 < -0.2 - log .448 = .604 flips the third example to label 1.
    assert (result.raw_accuracy, result.raw_macro_f1) == pytest.approx((0.5, 0.5))  # F1 (1/2 + 1/2) / 2
    assert (result.accuracy, result.macro_f1) == pytest.approx((0.75, (2 / 3 + 0.8) / 2))
    assert result.loss == pytest.approx((1 + 2 + 3 + 4) / 8)
    assert "log_prior" not in result.line()


def test_eerg_logs_every_interval_and_validation_and_keeps_the_best_weights(
    env: Env, rep_run: Run, tmp_path: Path
) -> None:
    out = tmp_path / "best"
    result = _eerg(env, _eerg_config(env, rep_run.out, eval_every=1, keep="best", logging_steps=3), out)
    train, valid = _lines(out, "train"), _lines(out, "valid")
    assert [m["step"] for m in train] == [3, 4]  # every 3 steps, and the last
    assert [m["epoch"] for m in train] == [1.5, 2.0]
    assert [m["step"] for m in valid] == [1, 2, 3, 4]  # every step; the epoch ends do not validate twice
    history = {h.global_step: h for h in result.history}
    for m in valid:
        if m["step"] in history:
            assert m["macro_f1"] == history[m["step"]].valid_macro_f1 and m["loss"] == history[m["step"]].valid_loss
    assert all({"raw_accuracy", "raw_macro_f1"} <= set(m) for m in valid)
    best = max(valid, key=lambda m: m["macro_f1"])  # max() keeps the first of equals, as only a rise replaces it
    prior = result.kept.pop("emotion_log_prior")  # the batch prior of the best step's validation prompts
    assert result.kept == {"keep": "best", "step": best["step"], "valid_macro_f1": best["macro_f1"]}
    assert len(prior) == len(LABELS) and sum(math.exp(v) for v in prior) == pytest.approx(1.0)
    assert read_json(out / "training.json")["kept"] == {**result.kept, "emotion_log_prior": prior}
    manifest, _ = load_bundle(out)
    assert manifest.emotion_log_prior == dict(zip(LABELS, prior, strict=True))  # what the chain calibrates with
    # The bundle holds the weights of that step: a run stopped there (same seed, same schedule) has them.
    stopped = tmp_path / "stopped"
    _eerg(env, _eerg_config(env, rep_run.out, max_steps=best["step"]), stopped)
    checkpoint = checkpoint_module.load_checkpoint(stopped)
    assert checkpoint is not None
    weights = load_tensors(out / "prefix" / "prefix.safetensors")
    torch.testing.assert_close(
        weights["embedding.weight"], checkpoint[0]["llm.prefix_encoder.embedding.weight"], rtol=0, atol=0
    )


def test_eerg_metrics_of_a_killed_and_resumed_run_equal_an_uninterrupted_run(
    env: Env, rep_run: Run, tmp_path: Path
) -> None:
    def run(out: Path, **kw: Any) -> list[tuple[int, str, float]]:
        _eerg(env, _eerg_config(env, rep_run.out, logging_steps=3, **kw), out, resume="max_steps" not in kw)
        return [(m["step"], m["kind"], m["loss"]) for m in read_metrics(out / METRICS_FILE)]

    whole = tmp_path / "whole"
    _eerg(env, _eerg_config(env, rep_run.out, logging_steps=3), whole)
    expected = [(m["step"], m["kind"], m["loss"]) for m in read_metrics(whole / METRICS_FILE)]
    parts = tmp_path / "parts"
    _eerg(env, _eerg_config(env, rep_run.out, logging_steps=3, max_steps=2), parts)  # mid-interval stop
    assert run(parts) == expected


def test_default_precision_is_bf16_only_on_a_cpu_that_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert default_mixed_precision() == "bf16"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert default_mixed_precision() == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # accelerate launch decides
    assert default_mixed_precision() is None
