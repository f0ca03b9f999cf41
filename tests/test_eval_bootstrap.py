"""Bootstrap intervals of an evaluation's metrics: per-sample statistics, percentiles, pairing, paired differences,
re-scoring a stored report, and ``elmd-sdk eval --bootstrap/--compare/--rescore`` through a tiny bundle."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chain_fakes import tiny_bundle
from typer.testing import CliRunner

from elmd_sdk.cli.main import app
from elmd_sdk.data import EMOTIONS, write_jsonl
from elmd_sdk.data.records import Sample, Turn
from elmd_sdk.errors import InputError
from elmd_sdk.evaluate import EvalResult, EvalSettings, Generation, add_bootstrap, eval_report, rescore_report, score
from elmd_sdk.evaluate.bootstrap import indices_sha256, paired_differences, percentile_interval, resample_indices
from elmd_sdk.evaluate.report import report_generations
from elmd_sdk.evaluate.statistics import BOOTSTRAP_METRICS, metric_value, resampled_metrics, sample_statistics
from elmd_sdk.metrics import TextMetricOptions, bleu, emotion_scores, tokenize
from elmd_sdk.metrics.reply import distinct_n

SETTINGS = EvalSettings(meteor_synonyms=False)  # exact and stem matches only: no WordNet needed


def gen(
    response: str,
    reference: str,
    emotion: str | None,
    gold: str,
    demo: tuple[str, str] | None = None,
    i: int = 0,
) -> Generation:
    """A generation of sample ``i`` (dialogue d{i}); ``demo`` is the demonstration's (r', e')."""
    demonstration = {"response": demo[0], "response_emotion": demo[1], "score": 0.5} if demo else None
    return Generation(f"d{i}", "A", f"utterance {i}", reference, gold, response, emotion, demonstration,
                      utterance_emotion="happy", reference_utterance_emotion=gold)  # fmt: skip


GENERATIONS = [
    gen("that is great news", "that is great news", "happy", "happy", ("great news", "happy"), 0),
    gen("oh no i am so sorry", "i am so sorry for you", "sad", "sad", ("so sorry", "neutral"), 1),
    gen("", "where is it", None, "neutral", None, 2),
    gen("Emotion: happy what", "what now", "happy", "anger", ("what now", "anger"), 3),
    gen("a b a b", "a b c", "neutral", "neutral", ("a b", "happy"), 4),
]


def make_report(generations: list[Generation], tmp_path: Path, name: str = "r.json") -> tuple[dict[str, Any], Path]:
    """An evaluation report of ``generations`` (scored as ``elmd-sdk eval`` scores), written to ``tmp_path/name``."""
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n", encoding="utf-8")
    metrics = score(generations, "en", EMOTIONS, meteor_synonyms=False)
    result = EvalResult(metrics=metrics, generations=list(generations), generation_settings={})
    bundle = {"name": "b", "labels": list(EMOTIONS)}
    report = eval_report(result, settings=SETTINGS, data=data, samples_total=len(generations), bundle=bundle)
    path = tmp_path / name
    path.write_text(json.dumps(report), encoding="utf-8")
    return json.loads(path.read_text(encoding="utf-8")), path


def statistics(generations: list[Generation]) -> tuple[Any, dict[str, Any]]:
    """The per-sample statistics of ``generations`` and their metrics."""
    metrics = score(generations, "en", EMOTIONS, meteor_synonyms=False)
    return sample_statistics(generations, metrics, EMOTIONS, TextMetricOptions(), "report.json"), metrics


def test_percentile_interval_by_hand() -> None:
    # numpy's linear percentiles of 0..4: positions 0.025 * 4 = 0.1 and 0.975 * 4 = 3.9.
    assert percentile_interval(np.array([0.0, 1.0, 2.0, 3.0, 4.0])) == pytest.approx([0.1, 3.9])
    assert percentile_interval(np.array([np.nan, 2.0, 2.0])) == [2.0, 2.0]  # undefined resamples are left out
    assert percentile_interval(np.array([np.nan, np.nan])) is None


def test_full_sample_values_from_the_statistics_equal_the_report_exactly() -> None:
    stats, metrics = statistics(GENERATIONS)
    assert stats.keys == BOOTSTRAP_METRICS  # every metric is defined on this fixture
    full = resampled_metrics(stats, np.arange(len(GENERATIONS))[None])
    for key in stats.keys:
        assert full[key][0] == metric_value(metrics, key), key
    words = [tokenize(g.response, "en") for g in GENERATIONS]
    references = [tokenize(g.reference, "en") for g in GENERATIONS]
    assert full["bleu_4"][0] == bleu(words, references, 4)
    assert full["distinct_2"][0] == distinct_n(words, 2)
    gold = [g.reference_emotion or "" for g in GENERATIONS]
    macro_f1 = emotion_scores([g.emotion for g in GENERATIONS], gold, EMOTIONS)["emotion_macro_f1"]
    assert full["emotion_macro_f1"][0] == macro_f1


def test_resampled_metrics_by_hand() -> None:
    two = [gen("a b a b", "a b a b", "happy", "happy", i=0), gen("a b c", "x y z", "sad", "happy", i=1)]
    stats, _ = statistics(two)
    values = resampled_metrics(stats, np.array([[0, 0], [1, 1], [0, 1]]))
    # Bigrams: reply 0 ab ba ab (2 distinct, 3 in all), reply 1 ab bc; ab is shared, ba and bc each one reply's own.
    # Drawn twice, a reply's own bigrams count twice, the shared one once: (2*1 + 1) / 6, (2*1 + 1) / 4, 3 / 5.
    assert values["distinct_2"] == pytest.approx([50.0, 75.0, 60.0])
    # Unigrams: a and b shared, c reply 1's own: 2 / 8, (2*1 + 2) / 6, 3 / 7.
    assert values["distinct_1"] == pytest.approx([25.0, 400 / 6, 300 / 7])
    assert values["emotion_accuracy"] == pytest.approx([100.0, 0.0, 50.0])
    assert values["bleu_4"] == pytest.approx([100.0, 0.0, 50.0])
    # The majority baseline predicts each resample's own majority gold label (happy throughout).
    assert values["emotion_baselines.majority.emotion_accuracy"] == pytest.approx([100.0, 100.0, 100.0])


def test_constant_generations_give_an_interval_of_zero_width_at_the_value(tmp_path: Path) -> None:
    same = [replace(GENERATIONS[1], dialogue_id=f"d{i}") for i in range(4)]
    report, path = make_report(same, tmp_path)
    add_bootstrap(report, resamples=50, seed=3, file=path)
    assert set(report["intervals"]) == set(BOOTSTRAP_METRICS)
    for key, interval in report["intervals"].items():
        value = metric_value(report["metrics"], key)
        assert interval == [value, value], key
    assert report["bootstrap"]["resamples"] == 50 and report["bootstrap"]["samples"] == 4


def test_resamples_depend_only_on_seed_count_and_number_so_two_reports_are_paired(tmp_path: Path) -> None:
    indices = resample_indices(7, 5, 20)
    assert indices.shape == (20, 5) and indices.min() >= 0 and indices.max() <= 4
    assert np.array_equal(indices, np.random.default_rng(7).integers(0, 5, size=(20, 5)))
    assert np.array_equal(indices, resample_indices(7, 5, 20))
    other_generations = [replace(g, response="something else entirely", emotion="fear") for g in GENERATIONS]
    first, first_path = make_report(GENERATIONS, tmp_path, "a.json")
    second, second_path = make_report(other_generations, tmp_path, "b.json")
    add_bootstrap(first, resamples=20, seed=7, file=first_path)
    add_bootstrap(second, resamples=20, seed=7, file=second_path)
    assert first["bootstrap"]["indices_sha256"] == second["bootstrap"]["indices_sha256"]
    assert first["intervals"] != second["intervals"]
    add_bootstrap(second, resamples=20, seed=8, file=second_path)
    assert first["bootstrap"]["indices_sha256"] != second["bootstrap"]["indices_sha256"]


def test_compare_with_itself_is_exactly_zero_and_with_another_run_is_the_metric_difference(tmp_path: Path) -> None:
    report, path = make_report(GENERATIONS, tmp_path)
    add_bootstrap(report, resamples=40, seed=0, file=path, base=copy.deepcopy(report), base_file=path)
    differences = report["compare"]["differences"]
    assert set(differences) == set(BOOTSTRAP_METRICS)
    for entry in differences.values():
        assert entry == {"value": 0.0, "interval": [0.0, 0.0], "excludes_zero": False}
    assert report["compare"]["base"] == str(path) and len(report["compare"]["base_sha256"]) == 64
    worse = [replace(g, response="no", emotion=None) for g in GENERATIONS]
    base, base_path = make_report(worse, tmp_path, "base.json")
    add_bootstrap(report, resamples=40, seed=0, file=path, base=base, base_file=base_path)
    bleu_2 = report["compare"]["differences"]["bleu_2"]
    assert bleu_2["value"] == report["metrics"]["bleu_2"] - base["metrics"]["bleu_2"]
    assert bleu_2["interval"][0] <= bleu_2["value"] <= bleu_2["interval"][1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["generations"][2].update(reference="something else"), "field 'reference': sample 3 differs"),
        (lambda r: r["generations"].pop(), "holds 4 samples, this run 5"),
        (lambda r: r["metrics"].update(bleu_tokens="chars"), "field 'metrics.bleu_tokens'"),
        (lambda r: r["metrics"].update(language="zh"), "field 'metrics.language'"),
        (lambda r: r.update(kind="ablations"), "is a Table 3 report"),
    ],
)
def test_a_base_report_of_other_samples_or_scoring_is_refused_naming_it(
    tmp_path: Path, change: Any, message: str
) -> None:
    report, path = make_report(GENERATIONS, tmp_path)
    base = copy.deepcopy(report)
    change(base)
    base_path = tmp_path / "other_base.json"
    with pytest.raises(InputError, match=message) as raised:
        add_bootstrap(report, resamples=10, seed=0, file=path, base=base, base_file=base_path)
    assert str(raised.value).startswith(str(base_path))


def test_rescore_reads_old_reports_and_drops_stale_intervals(tmp_path: Path) -> None:
    report, path = make_report(GENERATIONS, tmp_path)
    add_bootstrap(report, resamples=10, seed=0, file=path)
    old = copy.deepcopy(report)
    del old["metrics"]["labels"]  # reports before bootstrap intervals: the labels are the bundle's
    assert rescore_report(old, path) == []  # nothing changed
    assert old["metrics"] == report["metrics"]
    assert "intervals" not in old and "bootstrap" not in old
    assert old["rescored_from"]["path"] == str(path)
    del old["metrics"]["labels"]
    old["bundle"] = None
    with pytest.raises(InputError, match="records no emotion labels"):
        rescore_report(old, path)
    changed = copy.deepcopy(report)
    changed["generations"][0]["response"] = "no"
    assert any(line.startswith("bleu_4: ") for line in rescore_report(changed, path))


SAMPLES = [
    Sample("d1", Turn("A", "I won the lottery today", "happy"), Turn("B", "wow that is amazing news", "happy")),
    Sample("d2", Turn("A", "my cat ran away last night", "sad"), Turn("B", "i am so sorry about it", "sad")),
    Sample("d3", Turn("A", "where are my keys", "neutral"), Turn("B", "on the kitchen table", "neutral")),
]


def test_cli_bootstrap_compare_rescore_and_ablations_through_a_tiny_bundle(tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path / "tiny")  # a tiny random LLM, greedy, no index: w/o ERM changes nothing
    data = tmp_path / "test.jsonl"
    write_jsonl(data, SAMPLES)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    run = ["eval", "--bundle", str(bundle), "--data", str(data), "--no-meteor-synonyms", "--bootstrap", "100"]
    result = CliRunner().invoke(app, [*run, "--out", str(a)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "value [95% CI]" in result.output and "[95% interval] over 100 paired" in result.output
    first = json.loads(a.read_text(encoding="utf-8"))
    bleu_4, interval = first["metrics"]["bleu_4"], first["intervals"]["bleu_4"]
    assert interval[0] <= bleu_4 <= interval[1]
    assert f"{bleu_4:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]" in result.output
    assert first["bootstrap"]["resamples"] == 100 and first["bootstrap"]["samples"] == 3

    rescore = ["eval", "--rescore", str(a), "--out", str(b), "--bootstrap", "100"]
    result = CliRunner().invoke(app, [*rescore, "--compare", str(a)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "difference vs a.json" in result.output and "re-scored" not in result.output
    second = json.loads(b.read_text(encoding="utf-8"))
    assert second["metrics"] == first["metrics"] and second["intervals"] == first["intervals"]
    assert second["bootstrap"]["indices_sha256"] == first["bootstrap"]["indices_sha256"]
    assert {entry["interval"] == [0.0, 0.0] for entry in second["compare"]["differences"].values()} == {True}

    t3 = tmp_path / "t3.json"
    result = CliRunner().invoke(app, [*run, "--ablations", "--rows", "full,wo_erm", "--out", str(t3)])
    assert result.exit_code == 0, result.output
    assert "difference vs ours" in result.output
    rows = {row["row"]: row for row in json.loads(t3.read_text(encoding="utf-8"))["rows"]}
    assert rows["full"]["intervals"] == rows["wo_erm"]["intervals"] == first["intervals"]  # same samples, resamples
    assert rows["full"]["vs_full"] is None
    assert {entry["value"] for entry in rows["wo_erm"]["vs_full"].values()} == {0.0}

    other = tmp_path / "other.json"
    changed = copy.deepcopy(first)
    changed["generations"][1]["reference"] = "a different reference"
    other.write_text(json.dumps(changed), encoding="utf-8")
    result = CliRunner().invoke(app, [*rescore, "--compare", str(other)])
    assert isinstance(result.exception, InputError) and str(result.exception).startswith(str(other))
    result = CliRunner().invoke(app, [*run[:-2], "--out", str(b), "--compare", str(a)])
    assert isinstance(result.exception, InputError) and "needs --bootstrap" in str(result.exception)
    result = CliRunner().invoke(app, [*rescore, "--data", str(data)])
    assert isinstance(result.exception, InputError) and "drop --data" in str(result.exception)
    result = CliRunner().invoke(app, [*run, "--out", str(b), "--compare", str(other)])  # refused before generating
    assert isinstance(result.exception, InputError) and "sample 2 differs" in str(result.exception)


def test_report_generations_survive_json(tmp_path: Path) -> None:
    """The generations a report stores rebuild the same Generation objects the statistics are computed from."""
    report, path = make_report(GENERATIONS, tmp_path)
    assert report_generations(report, path) == GENERATIONS
    assert [asdict(g) for g in report_generations(report, path)] == report["generations"]
    with pytest.raises(InputError, match="holds no generations"):
        report_generations({"generations": []}, path)


# -- paired differences, signs and intervals on hand-made values ---------------------------------------------------


def _pair(full: float | None, resampled: list[float]) -> tuple[dict[str, float | None], dict[str, Any]]:
    return {"m": full}, {"m": np.array(resampled, dtype=float)}


@pytest.mark.parametrize(
    ("ours", "theirs", "expected"),
    [
        # differences 2..6: linear percentiles at positions 0.1 and 3.9 of the sorted five
        ((5.0, [3, 4, 5, 6, 7]), (1.0, [1, 1, 1, 1, 1]), {"value": 4.0, "interval": [2.1, 5.9], "excludes_zero": True}),
        # the same pair the other way round: every sign flips, the interval still excludes 0
        (
            (1.0, [1, 1, 1, 1, 1]),
            (5.0, [3, 4, 5, 6, 7]),
            {"value": -4.0, "interval": [-5.9, -2.1], "excludes_zero": True},
        ),
        # differences -1..3 straddle 0
        (
            (2.0, [0, 1, 2, 3, 4]),
            (1.0, [1, 1, 1, 1, 1]),
            {"value": 1.0, "interval": [-0.9, 2.9], "excludes_zero": False},
        ),
        # differences 0, 0, 0, 0, 1: the interval starts exactly at 0, which it does not exclude
        (
            (1.0, [1, 1, 1, 1, 2]),
            (1.0, [1, 1, 1, 1, 1]),
            {"value": 0.0, "interval": [0.0, 0.9], "excludes_zero": False},
        ),
        # and ends exactly at 0 from below
        (
            (1.0, [0, 1, 1, 1, 1]),
            (1.0, [1, 1, 1, 1, 1]),
            {"value": 0.0, "interval": [-0.9, 0.0], "excludes_zero": False},
        ),
    ],
)
def test_paired_differences_are_ours_minus_theirs_with_their_interval(
    ours: tuple[float, list[float]], theirs: tuple[float, list[float]], expected: dict[str, Any]
) -> None:
    got = paired_differences(_pair(*ours), _pair(*theirs))["m"]
    assert got["value"] == pytest.approx(expected["value"])
    assert got["interval"] == pytest.approx(expected["interval"])
    assert got["excludes_zero"] is expected["excludes_zero"]


def test_paired_differences_leave_out_undefined_values_and_metrics_one_side_lacks() -> None:
    ours = ({"m": 2.0, "only_ours": 1.0, "undefined": None},
            {"m": np.array([np.nan, 2.0, 3.0]), "only_ours": np.ones(3), "undefined": np.full(3, np.nan)})  # fmt: skip
    theirs = ({"m": 1.0, "undefined": 1.0}, {"m": np.array([1.0, 1.0, 1.0]), "undefined": np.ones(3)})
    got = paired_differences(ours, theirs)
    assert set(got) == {"m", "undefined"}
    # the first resample is undefined for us: the interval is over the differences 1 and 2 only
    assert got["m"] == {"value": 1.0, "interval": pytest.approx([1.025, 1.975]), "excludes_zero": True}
    assert got["undefined"] == {"value": None, "interval": None, "excludes_zero": False}


def test_intervals_are_the_percentiles_of_the_metric_on_each_known_resample(tmp_path: Path) -> None:
    """Emotion accuracy on two samples (the first right, the second wrong) is 100 x the share of first-sample draws
    in each resample: the interval follows from the indices alone, and the full sample is not one of them."""
    two = [GENERATIONS[0], replace(GENERATIONS[1], emotion="fear", dialogue_id="d9")]
    report, path = make_report(two, tmp_path)
    assert report["metrics"]["emotion_accuracy"] == 50.0
    add_bootstrap(report, resamples=30, seed=11, file=path)
    indices = resample_indices(11, 2, 30)
    accuracy = 100.0 * (indices == 0).mean(axis=1)
    assert 0.0 in accuracy and 100.0 in accuracy  # the seed draws both extremes, so the interval is wide
    assert report["intervals"]["emotion_accuracy"] == pytest.approx(list(np.percentile(accuracy, [2.5, 97.5])))
    assert report["bootstrap"] == {
        "resamples": 30, "seed": 11, "samples": 2, "confidence": 95,
        "indices_sha256": indices_sha256(indices), "method": report["bootstrap"]["method"],
    }  # fmt: skip
    add_bootstrap(report, resamples=6, seed=5, file=path)
    # the six resamples draw the first sample 0, 1, 1, 1, 1 and 2 times: accuracies 0, 50, 50, 50, 50 and 100
    assert sorted(100.0 * (resample_indices(5, 2, 6) == 0).mean(axis=1)) == [0, 50, 50, 50, 50, 100]
    # linear percentiles at positions 0.125 and 4.875 (with the full sample's 50 as a seventh value: 7.5 and 92.5)
    assert report["intervals"]["emotion_accuracy"] == pytest.approx([6.25, 93.75])


def test_one_resample_is_enough_and_none_is_refused(tmp_path: Path) -> None:
    report, path = make_report(GENERATIONS, tmp_path)
    add_bootstrap(report, resamples=1, seed=0, file=path)
    assert report["bootstrap"]["resamples"] == 1
    with pytest.raises(InputError, match="must be at least 1, got 0") as raised:
        add_bootstrap(report, resamples=0, seed=0, file=path)
    assert raised.value.field == "--bootstrap"


def test_table3_rows_are_compared_with_the_full_row_as_row_minus_full(tmp_path: Path) -> None:
    full, _ = make_report(GENERATIONS, tmp_path, "full.json")
    worse_generations = [replace(g, response="no", emotion="fear") for g in GENERATIONS]
    worse, _ = make_report(worse_generations, tmp_path, "worse.json")
    rows = [{"row": "wo_erm", **_result(worse)}, {"row": "full", **_result(full)}, {"row": "wo_v", "metrics": None}]
    report = {**{k: v for k, v in full.items() if k not in ("metrics", "generations")}, "kind": "ablations",
              "rows": rows}  # fmt: skip
    path = tmp_path / "t3.json"
    add_bootstrap(report, resamples=40, seed=2, file=path)
    by_row = {row["row"]: row for row in report["rows"]}
    assert by_row["full"]["vs_full"] is None and "vs_full" not in by_row["wo_v"]
    difference = by_row["wo_erm"]["vs_full"]
    for key in ("bleu_2", "emotion_accuracy"):
        assert difference[key]["value"] == pytest.approx(worse["metrics"][key] - full["metrics"][key]), key
        assert difference[key]["value"] < 0 and difference[key]["interval"][1] <= 0, key  # the worse row is below
    assert by_row["wo_erm"]["intervals"]["emotion_accuracy"][1] <= by_row["full"]["intervals"]["emotion_accuracy"][1]


def _result(report: dict[str, Any]) -> dict[str, Any]:
    return {key: report[key] for key in ("metrics", "generation_settings", "generations")}
