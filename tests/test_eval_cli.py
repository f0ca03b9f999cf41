"""Table 3 ablations (rows, variants, "not provided") and the ``elmd-sdk eval`` command through typer's CliRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from chain_fakes import save_tiny_llm
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.retrievers import BaseRetriever
from typer.testing import CliRunner

import elmd_sdk.evaluate as ev
from elmd_sdk.bundle import BundleManifest, save_manifest
from elmd_sdk.chains.chain import ELMDChain
from elmd_sdk.cli.main import app
from elmd_sdk.data import EMOTIONS, write_jsonl
from elmd_sdk.data.records import Sample, Turn
from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.evaluate import EvalSettings, Variant, classify_variant, parse_variant, run_ablations
from elmd_sdk.evaluate import ablations as ablations_module
from elmd_sdk.metrics import TextMetricOptions

SAMPLES = [
    Sample("d1", Turn("A", "I won the lottery today", "happy"), Turn("B", "wow that is amazing news for you", "happy")),
    Sample(
        "d2", Turn("A", "my cat ran away last night", "sad"), Turn("B", "i am so sorry I hope she comes back", "sad")
    ),
]
REFERENCES = {s.utterance.text: s.response.text for s in SAMPLES}


class EchoChat(BaseChatModel):
    """Answers with the prompt's reference reply (emotion happy) if there is one, else a fixed neutral reply."""

    @property
    def _llm_type(self) -> str:
        return "echo"

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        # The demonstration R is an example exchange: its answer is an AIMessage before the current turn.
        demos = [m for m in messages[:-1] if isinstance(m, AIMessage)]
        found = re.search(r"Response: (.*)", str(demos[0].text)) if demos else None
        text = f"Emotion: happy\nResponse: {found.group(1)}" if found else "Emotion: neutral\nResponse: I do not know."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class LookupRetriever(BaseRetriever):
    """Returns the reference response of the query (``exact``) or a fixed wrong one."""

    exact: bool = True

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        text = REFERENCES[query] if self.exact else "the weather is nice"
        return [Document(page_content=text, metadata={"utterance": query, "score": 1.0})]


FREE = EvalSettings(emotion_mode="free")  # EchoChat is not an ELMDChatModel: it cannot score the labels


def make_bundle(path: Path, llm_hash: str = "cafe", language: str = "en") -> Path:
    save_manifest(
        path, BundleManifest(name=path.name, base_llm_config_sha256=llm_hash, labels=list(EMOTIONS), language=language)
    )
    return path


def make_index_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "index.json").write_text("{}", encoding="utf-8")
    return path


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, EvalSettings]]:
    """Patch chain and retriever loading: bundles named 'wo_*' get a retriever-less chain; records the loads."""
    loads: list[tuple[str, EvalSettings]] = []

    def load_chain(bundle_dir: Path, settings: EvalSettings, **_: Any) -> ELMDChain:
        loads.append((Path(bundle_dir).name, settings))
        retriever = None if Path(bundle_dir).name.startswith("wo_") else LookupRetriever()
        return ELMDChain(chat_model=EchoChat(), retriever=retriever, emotion_mode=settings.emotion_mode)

    for module in (ev, ablations_module):  # the command's single run takes it from ev, run_ablations from its module
        monkeypatch.setattr(module, "load_chain", load_chain)
    monkeypatch.setattr(ablations_module, "load_retriever", lambda index_dir: LookupRetriever(exact=False))
    return loads


def test_parse_and_classify_variants(tmp_path: Path) -> None:
    assert parse_variant("wo-ert=some/dir") == ("wo_ert", Path("some/dir"))
    with pytest.raises(InputError, match="ROW=DIR"):
        parse_variant("wo_ert")
    with pytest.raises(InputError, match="unknown row 'full'"):
        parse_variant("full=x")
    bundle = make_bundle(tmp_path / "b")
    index = make_index_folder(tmp_path / "i")
    assert classify_variant("wo_ssc", index) == Variant("wo_ssc", "index", index)
    assert classify_variant("wo_rep", bundle).kind == "bundle"
    with pytest.raises(InputError, match="row wo_rep takes a bundle, this folder is an index"):
        classify_variant("wo_rep", index)
    with pytest.raises(InputError, match=r"neither bundle\.json"):
        classify_variant("wo_ert", tmp_path)


def test_ablations_without_variants_mark_trained_rows_not_provided(tmp_path: Path, fakes: list[Any]) -> None:
    rows = run_ablations(make_bundle(tmp_path / "full"), SAMPLES, settings=FREE, show_progress=False)
    assert [r.key for r in rows] == ["full", "wo_erm", "wo_ert", "wo_ssc", "wo_v", "wo_rep"]
    assert [r.label for r in rows] == ["ours", "w/o ERM", "w/o ERT", "w/o SSC", "w/o V", "w/o REP"]
    status = {r.key: r.status for r in rows}
    assert status == {
        "full": "ok",
        "wo_erm": "ok",
        "wo_ert": "not provided",
        "wo_ssc": "not provided",
        "wo_v": "ok",
        "wo_rep": "not provided",
    }
    by = {r.key: r for r in rows}
    assert by["wo_ert"].result is None and "--no-ert" in by["wo_ert"].note
    assert "--variant wo_rep=BUNDLE_DIR" in by["wo_rep"].note
    full, wo_erm, wo_v = by["full"].result, by["wo_erm"].result, by["wo_v"].result
    assert full is not None and wo_erm is not None and wo_v is not None
    assert full.metrics["bleu_4"] == pytest.approx(100.0)  # the echoed demonstration is the reference
    assert wo_erm.metrics["bleu_4"] < 10.0 and all(g.demonstration is None for g in wo_erm.generations)
    assert wo_erm.metrics["emotion_accuracy"] == pytest.approx(0.0)  # "neutral" against happy/sad
    assert full.metrics["emotion_accuracy"] == pytest.approx(50.0)
    assert "no video projector" in by["wo_v"].note
    assert wo_v.metrics["bleu_4"] == pytest.approx(100.0)
    assert len(fakes) == 1  # the full bundle is loaded once for every switch row


def test_ablation_variants_index_swap_and_bundles(tmp_path: Path, fakes: list[Any]) -> None:
    full = make_bundle(tmp_path / "full")
    variants = [
        Variant("wo_ert", "index", make_index_folder(tmp_path / "ert_index")),
        Variant("wo_rep", "bundle", make_bundle(tmp_path / "wo_rep")),
    ]
    settings = EvalSettings(generation={"max_new_tokens": 5, "seed": 3}, emotion_mode="free")
    rows = run_ablations(full, SAMPLES, variants, settings, rows=["full", "wo_ert", "wo_rep"], show_progress=False)
    assert [r.key for r in rows] == ["full", "wo_ert", "wo_rep"]
    by = {r.key: r for r in rows}
    assert by["wo_ert"].status == "ok" and "ert_index" in by["wo_ert"].source
    wo_ert = by["wo_ert"].result
    assert wo_ert is not None
    assert [g.demonstration["response"] for g in wo_ert.generations if g.demonstration] == ["the weather is nice"] * 2
    assert wo_ert.metrics["bleu_4"] < 10.0
    assert by["wo_rep"].source == f"bundle {tmp_path / 'wo_rep'}"
    assert [name for name, _ in fakes] == ["full", "wo_rep"]
    assert all(s == settings for _, s in fakes)


def test_ablation_of_variant_bundles_only_never_loads_the_full_bundle(tmp_path: Path, fakes: list[Any]) -> None:
    full = make_bundle(tmp_path / "full")
    wo_rep = Variant("wo_rep", "bundle", make_bundle(tmp_path / "wo_rep"))
    rows = run_ablations(full, SAMPLES, [wo_rep], FREE, rows=["wo_rep"], show_progress=False)
    assert [(r.key, r.status) for r in rows] == [("wo_rep", "ok")]
    assert [name for name, _ in fakes] == ["wo_rep"]


def test_ablation_variant_bundle_for_another_llm_is_refused(tmp_path: Path, fakes: list[Any]) -> None:
    full = make_bundle(tmp_path / "full")
    other = Variant("wo_rep", "bundle", make_bundle(tmp_path / "wo_rep", llm_hash="beef"))
    with pytest.raises(MismatchError, match="base_llm_config_sha256"):
        run_ablations(full, SAMPLES, [other], show_progress=False)
    with pytest.raises(InputError, match="unknown row 'wo_x'"):
        run_ablations(full, SAMPLES, rows=["wo_x"], show_progress=False)


def test_ablations_through_a_real_tiny_bundle(tmp_path: Path) -> None:
    """No patching: a bundle with a tiny random LLM loads through ELMDChain.from_bundle; switch rows run."""
    from elmd_sdk.models.llm import llm_fingerprint, load_llm

    bundle = tmp_path / "tiny"
    save_tiny_llm(bundle / "llm")
    model, _ = load_llm(str(bundle / "llm"))
    save_manifest(
        bundle,
        BundleManifest(
            name="tiny",
            base_llm="llm",
            base_llm_config_sha256=llm_fingerprint(model)["config_sha256"],
            labels=list(EMOTIONS),
        ),
    )
    settings = EvalSettings(generation={"max_new_tokens": 4, "do_sample": False}, emotion_mode="free")
    rows = run_ablations(bundle, SAMPLES, settings=settings, rows=["full", "wo_erm", "wo_rep"], show_progress=False)
    by = {r.key: r for r in rows}
    assert by["wo_rep"].status == "not provided"
    full, wo_erm = by["full"].result, by["wo_erm"].result
    assert full is not None and wo_erm is not None
    assert "no index" in by["wo_erm"].note
    assert full.generation_settings["max_new_tokens"] == 4 and full.generation_settings["do_sample"] is False
    # Greedy decoding of the same prompt (no retrieval either way): identical generations.
    assert [g.response for g in full.generations] == [g.response for g in wo_erm.generations]


def test_cli_eval_writes_report_and_table(tmp_path: Path, fakes: list[Any]) -> None:
    bundle = make_bundle(tmp_path / "full")
    data = tmp_path / "test.jsonl"
    write_jsonl(data, SAMPLES)
    out = tmp_path / "report.json"
    args = ["eval", "--bundle", str(bundle), "--data", str(data), "--out", str(out), "--limit", "1", "--greedy",
            "--emotion-mode", "free"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "7", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "BLEU-4" in result.output and "report written" in result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["kind"] == "eval"
    assert report["bundle"]["name"] == "full" and len(report["bundle"]["manifest_sha256"]) == 64
    assert report["data"]["samples_used"] == 1 and report["data"]["samples_total"] == 2
    assert report["settings"]["generation"] == {"max_new_tokens": 7, "seed": 0, "do_sample": False}
    assert report["settings"]["batch_size"] == 2
    assert report["generations"][0]["response"] == SAMPLES[0].response.text
    assert fakes[0][1].generation["do_sample"] is False
    metrics = report["metrics"]
    assert metrics["template_leak_rate"] == 0.0 and metrics["copy_rate"] == 100.0  # EchoChat answers with r'
    assert (
        metrics["emotion_baselines"]["majority"]["emotion_accuracy"] == 100.0
    )  # one sample: its label is the majority
    assert (tmp_path / "report.confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "report.confusion.png" in result.output


def test_cli_chinese_metric_options_default_to_the_config_and_reach_the_report(
    tmp_path: Path, fakes: list[Any]
) -> None:
    bundle = make_bundle(tmp_path / "full")
    data = tmp_path / "test.jsonl"
    write_jsonl(data, SAMPLES)
    out = tmp_path / "r.json"
    base = ["eval", "--bundle", str(bundle), "--data", str(data), "--out", str(out), "--emotion-mode", "free"]
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 0, result.output
    assert fakes[0][1].text_metrics == TextMetricOptions()
    result = CliRunner().invoke(app, [*base, "--zh-bleu-tokens", "words", "--zh-rouge-counting", "clipped"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["settings"]["text_metrics"] == {"zh_bleu_tokens": "words", "zh_rouge_counting": "clipped"}
    assert report["metrics"]["bleu_tokens"] == "words" and report["metrics"]["rouge_counting"] == "clipped"  # English
    assert "BLEU on words" in result.output
    result = CliRunner().invoke(app, [*base, "--zh-rouge-counting", "lin"], env={"COLUMNS": "250"})
    assert result.exit_code == 2 and "'lin' is not one of 'unique', 'clipped'" in result.output
    assert fakes[-1][1].demonstration_form == "exchange"
    result = CliRunner().invoke(app, [*base, "--demonstration", "paper"])
    assert result.exit_code == 0, result.output
    assert fakes[-1][1].demonstration_form == "paper"
    assert json.loads(out.read_text(encoding="utf-8"))["settings"]["demonstration_form"] == "paper"
    result = CliRunner().invoke(app, [*base, "--demonstration", "both"])
    assert result.exit_code != 0 and "must be exchange or paper" in str(result.exception)


def test_cli_sample_flag_and_default_decoding(tmp_path: Path, fakes: list[Any]) -> None:
    bundle = make_bundle(tmp_path / "full")
    data = tmp_path / "test.jsonl"
    write_jsonl(data, SAMPLES)
    base = ["eval", "--bundle", str(bundle), "--data", str(data), "--out", str(tmp_path / "r.json"), "--emotion-mode",
            "free"]  # fmt: skip
    assert CliRunner().invoke(app, base).exit_code == 0
    assert CliRunner().invoke(app, [*base, "--sample"]).exit_code == 0
    assert [s.generation.get("do_sample") for _, s in fakes] == [None, True]


def test_cli_ablations_table_shows_not_provided(tmp_path: Path, fakes: list[Any]) -> None:
    bundle = make_bundle(tmp_path / "full")
    index = make_index_folder(tmp_path / "ssc_index")
    data = tmp_path / "test.jsonl"
    write_jsonl(data, SAMPLES)
    out = tmp_path / "ablations.json"
    args = ["eval", "--ablations", "--bundle", str(bundle), "--data", str(data), "--out", str(out), "--emotion-mode",
            "free"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--variant", f"wo_ssc={index}"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for label in ("ours", "w/o ERM", "w/o ERT", "w/o SSC", "w/o V", "w/o REP"):
        assert label in result.output
    assert result.output.count("not provided") == 2  # w/o ERT and w/o REP
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["kind"] == "ablations"
    assert report["variants"] == {"wo_ssc": {"kind": "index", "path": str(index)}}
    rows = {r["row"]: r for r in report["rows"]}
    assert rows["wo_ert"]["status"] == "not provided" and rows["wo_ert"]["metrics"] is None
    assert rows["wo_ssc"]["status"] == "ok" and len(rows["wo_ssc"]["generations"]) == 2
    assert rows["full"]["metrics"]["bleu_4"] == pytest.approx(100.0)


def test_cli_bad_options_are_input_errors(tmp_path: Path, fakes: list[Any]) -> None:
    bundle = make_bundle(tmp_path / "full")
    data = tmp_path / "test.jsonl"
    write_jsonl(data, SAMPLES)
    base = ["eval", "--bundle", str(bundle), "--data", str(data), "--out", str(tmp_path / "r.json")]
    result = CliRunner().invoke(app, [*base, "--variant", "wo_ert=x"])
    assert isinstance(result.exception, InputError) and "only apply with --ablations" in str(result.exception)
    result = CliRunner().invoke(app, [*base, "--ablations", "--variant", f"wo_rep={make_index_folder(tmp_path / 'i')}"])
    assert isinstance(result.exception, InputError) and "takes a bundle" in str(result.exception)
    result = CliRunner().invoke(app, ["eval", "--bundle", str(tmp_path / "nope"), "--data", str(data), "--out", "r"])
    assert isinstance(result.exception, InputError) and "bundle folder not found" in str(result.exception)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"dialogue_id": "d"}\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", "--bundle", str(bundle), "--data", str(bad), "--out", "r"])
    assert isinstance(result.exception, InputError) and "bad.jsonl:1" in str(result.exception)


def test_untuned_rows_run_the_base_llm_without_the_bundles_prefix(tmp_path: Path) -> None:
    import dataclasses
    import shutil

    from chain_fakes import tiny_bundle

    from elmd_sdk.bundle import load_bundle

    bundle = tiny_bundle(tmp_path / "tuned")
    plain = tmp_path / "plain"  # the same bundle with its prefix removed: what the untuned rows must equal
    shutil.copytree(bundle, plain)
    shutil.rmtree(plain / "prefix")
    manifest, _ = load_bundle(bundle)
    save_manifest(plain, dataclasses.replace(manifest, prefix_dir=None, pre_seq_len=None))
    settings = EvalSettings(meteor_synonyms=False)
    rows = run_ablations(bundle, SAMPLES, settings=settings, rows=["full", "base", "base_wo_erm"], show_progress=False)
    assert [(r.key, r.label, r.status) for r in rows] == [
        ("full", "ours", "ok"), ("base", "untuned", "ok"), ("base_wo_erm", "untuned w/o ERM", "ok")
    ]  # fmt: skip
    [expected] = run_ablations(plain, SAMPLES, settings=settings, rows=["full"], show_progress=False)

    def replies(row: Any) -> list[str]:
        return [g.response for g in row.result.generations]

    assert replies(rows[1]) == replies(expected) == replies(rows[2])  # no index in this bundle: w/o ERM is the same
    assert replies(rows[0]) != replies(rows[1])  # the random prefix changes what the tiny model says
    with pytest.raises(InputError, match="unknown row 'untuned'"):
        run_ablations(bundle, SAMPLES, settings=settings, rows=["untuned"])


def test_emotion_calibration_can_be_turned_off_for_an_evaluation(tmp_path: Path) -> None:
    from chain_fakes import tiny_bundle

    from elmd_sdk.evaluate.bundles import load_chain

    bundle = tiny_bundle(tmp_path / "b")
    assert load_chain(bundle, EvalSettings()).emotion_calibration is True
    chain = load_chain(bundle, EvalSettings(emotion_calibration=False))
    assert chain.emotion_calibration is False and chain._emotion_log_prior() is None  # raw label probabilities


def test_calibrate_on_fits_every_rows_own_prior_on_those_samples(tmp_path: Path) -> None:
    from chain_fakes import tiny_bundle

    from elmd_sdk.chains.input import sample_input
    from elmd_sdk.evaluate.bundles import load_chain

    bundle = tiny_bundle(tmp_path / "b")
    valid = tmp_path / "valid.jsonl"
    write_jsonl(valid, SAMPLES[:2])
    settings = EvalSettings(meteor_synonyms=False, generation={"max_new_tokens": 2}, calibrate_on=str(valid))
    rows = run_ablations(bundle, SAMPLES, settings=settings, rows=["full", "base"], show_progress=False)
    priors = [r.result.generation_settings["emotion_log_prior"] for r in rows]  # type: ignore[union-attr]
    for row, prior in zip(rows, priors, strict=True):
        chain = load_chain(bundle, settings, use_trained=row.key == "full")
        expected = chain.fit_emotion_prior(sample_input(s) for s in SAMPLES[:2])
        assert [prior[label] for label in EMOTIONS] == pytest.approx(expected, abs=1e-6)
    assert priors[0] != pytest.approx(priors[1], abs=1e-4)  # the prefix changes the prior: each row has its own
    short = EvalSettings(meteor_synonyms=False, generation={"max_new_tokens": 2})
    plain = run_ablations(bundle, SAMPLES, settings=short, rows=["full"], show_progress=False)
    assert "emotion_log_prior" not in plain[0].result.generation_settings  # type: ignore[union-attr]


def test_calibrate_records_the_trained_chains_prior_in_the_bundle(tmp_path: Path) -> None:
    from chain_fakes import tiny_bundle

    from elmd_sdk.bundle import load_bundle
    from elmd_sdk.chains.input import sample_input

    bundle = tiny_bundle(tmp_path / "b")
    valid = tmp_path / "valid.jsonl"
    write_jsonl(valid, SAMPLES)
    expected = ELMDChain.from_bundle(bundle).fit_emotion_prior(sample_input(s) for s in SAMPLES[:2])
    result = CliRunner().invoke(app, ["calibrate", "--bundle", str(bundle), "--data", str(valid), "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "emotion prior recorded" in result.output
    manifest, _ = load_bundle(bundle)
    assert manifest.label_log_prior() == pytest.approx(expected, abs=1e-6)
    assert ELMDChain.from_bundle(bundle).emotion_log_prior == manifest.label_log_prior()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    result = CliRunner().invoke(app, ["calibrate", "--bundle", str(bundle), "--data", str(empty)])
    assert isinstance(result.exception, InputError) and "no samples" in str(result.exception)


def test_calibrate_with_fusion_records_the_fused_emotion_and_chains_load_it(tmp_path: Path) -> None:
    from chain_fakes import tiny_bundle

    from elmd_sdk.bundle import load_bundle
    from elmd_sdk.chains.input import sample_input

    bundle = tiny_bundle(tmp_path / "b")
    valid = tmp_path / "valid.jsonl"
    write_jsonl(valid, SAMPLES)
    result = CliRunner().invoke(app, ["calibrate", "--fusion", "--bundle", str(bundle), "--data", str(valid)])
    assert result.exit_code == 0, result.output
    assert "fused emotion recorded" in result.output
    manifest, _ = load_bundle(bundle)
    assert manifest.chain["emotion_source"] == "fused" and manifest.chain["emotion_fusion"]["llm"] > 0
    assert set(manifest.chain["emotion_fusion"]["decision"]) == set(EMOTIONS)
    assert manifest.chain["emotion_fusion"]["decision_min_ratio"] in (0.0, 0.25, 0.5)
    assert "utterance_calibration" not in manifest.chain  # this bundle does not retrieve
    chain = ELMDChain.from_bundle(bundle)
    assert chain.emotion_source == "fused" and chain.emotion_fusion is not None
    assert ELMDChain.from_bundle(bundle, use_trained=False).emotion_source == "llm"  # fitted for the trained model
    scores = chain.invoke(sample_input(SAMPLES[0])).emotion_scores
    assert scores is not None and sum(scores.values()) == pytest.approx(1.0)
