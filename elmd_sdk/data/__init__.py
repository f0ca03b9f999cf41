"""Data layer: the sample record, corpus loaders, label mappings and dialogue-level splits."""

from elmd_sdk.data.records import Sample, Turn, VideoRef

__all__ = ["Sample", "Turn", "VideoRef"]
