"""Data layer: the sample record, corpus loaders, label mappings and dialogue-level splits."""

from elmd_sdk.data.background import Backgrounds, read_backgrounds
from elmd_sdk.data.build import (
    BuildResult,
    build_samples,
    join_sentences,
    merge_turns,
    predominant_emotion,
)
from elmd_sdk.data.cped import load_cped
from elmd_sdk.data.jsonl import iter_jsonl, read_jsonl, sample_from_dict, write_jsonl
from elmd_sdk.data.labels import CORPORA, EMOTIONS, LabelMap, builtin_label_map, read_label_map
from elmd_sdk.data.m3ed import load_m3ed, parse_timestamp
from elmd_sdk.data.meld import load_meld
from elmd_sdk.data.prepare import FORMATS, prepare_corpus
from elmd_sdk.data.records import Dialogue, Sample, Sentence, Turn, VideoRef
from elmd_sdk.data.split import SPLITS, parse_ratios, split_samples, write_splits

__all__ = [
    "CORPORA",
    "EMOTIONS",
    "FORMATS",
    "SPLITS",
    "Backgrounds",
    "BuildResult",
    "Dialogue",
    "LabelMap",
    "Sample",
    "Sentence",
    "Turn",
    "VideoRef",
    "build_samples",
    "builtin_label_map",
    "iter_jsonl",
    "join_sentences",
    "load_cped",
    "load_m3ed",
    "load_meld",
    "merge_turns",
    "parse_ratios",
    "parse_timestamp",
    "predominant_emotion",
    "prepare_corpus",
    "read_backgrounds",
    "read_jsonl",
    "read_label_map",
    "sample_from_dict",
    "split_samples",
    "write_jsonl",
    "write_splits",
]
