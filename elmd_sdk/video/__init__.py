"""Video path (paper 3.4): frame sampling, frozen visual encoders (Eq. 5), pooling (Eq. 6-8) and the projector (Eq. 9).

Backends with heavy imports load lazily: ``load_visual_encoder`` imports transformers only for transformers towers.
"""

from elmd_sdk.video.encoders import VisualEncoder, load_visual_encoder
from elmd_sdk.video.frames import sample_frames
from elmd_sdk.video.pooling import spatio_temporal_pool
from elmd_sdk.video.projector import ProjectorConfig, VideoProjector

__all__ = [
    "ProjectorConfig",
    "VideoProjector",
    "VisualEncoder",
    "load_visual_encoder",
    "sample_frames",
    "spatio_temporal_pool",
]
