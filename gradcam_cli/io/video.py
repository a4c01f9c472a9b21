"""Video files in: frames decoded with OpenCV's FFmpeg backend (``opencv-python-headless``).

Why OpenCV and not PyAV: OpenCV is already a dependency (every overlay is drawn with it), and
its wheels carry FFmpeg's demuxers and decoders (MP4 / MOV / M4V, AVI, MKV, WebM; H.264, HEVC,
MPEG-4 part 2, MJPEG, VP8 / VP9, ...: docs/video.md lists what was checked). PyAV reads the same
containers through the same FFmpeg and would add a 30 MB wheel for nothing the runs need.

:class:`VideoReader` yields the kept frames (``--start``, ``--end``, ``--frame-stride``,
``--max-frames``) as RGB uint8 in file order with their index in the file and time in seconds
(index / frame rate). A file that cannot be opened, holds no decodable frame, or ends before
the frame count its header gives (truncated, corrupt) raises :class:`~gradcam_cli.errors.ImageError`;
the caller turns it into an error record and goes on.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np

from gradcam_cli.errors import ImageError

#: the extensions a folder walk takes as videos (a named file is a video by its extension too)
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm")
#: the frame rate assumed when a file states none (a warning says so)
FALLBACK_FPS = 25.0


def is_video(path: str) -> bool:
    return os.path.splitext(str(path))[1].lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    """What the file's header says: frame rate, frame size, and its frame count (0: unknown)."""

    fps: float
    width: int
    height: int
    frames: int


class Frame(NamedTuple):
    index: int  # in the file, 0-based
    time: float  # seconds: index / fps
    rgb: np.ndarray  # (height, width, 3) uint8


@dataclass(frozen=True)
class FrameRange:
    """Which frames are explained: from ``start`` to ``end`` seconds (None: the file's start / end),
    every ``stride``-th frame from the first kept one, at most ``max_frames`` of them."""

    stride: int = 1
    max_frames: int | None = None
    start: float | None = None
    end: float | None = None

    def first_index(self, fps: float) -> int:
        return 0 if self.start is None else math.ceil(self.start * fps - 1e-9)

    def past_end(self, index: int, fps: float) -> bool:
        return self.end is not None and index / fps > self.end + 1e-9


class VideoReader:
    """The kept frames of one video file; opened (and its header checked) on construction."""

    def __init__(self, path: str, frames: FrameRange = FrameRange()):
        import cv2

        self.path, self.range, self.warnings = path, frames, []
        if not os.path.exists(path):
            raise ImageError(path, "missing", "no such file; check the path")
        if os.path.isdir(path):
            raise ImageError(path, "unreadable", "is a folder, not a video file")
        self._cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            self._cap.release()
            raise ImageError(path, "unreadable", "OpenCV (FFmpeg) cannot open it as a video: not a video, or "
                                                 "corrupt; re-encode it (ffmpeg -i IN -c:v libx264 OUT.mp4)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not math.isfinite(fps) or fps <= 0:
            self.warnings.append(f"the file states no frame rate; times assume {FALLBACK_FPS:g} frames/s")
            fps = FALLBACK_FPS
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.info = VideoInfo(fps, int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                              int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), max(count, 0))
        self.decoded = 0  # frames read from the file (kept or skipped)

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        r, fps = self.range, self.info.fps
        first, kept, index, stopped = r.first_index(fps), 0, 0, False
        try:
            while True:
                if r.max_frames is not None and kept >= r.max_frames or r.past_end(index, fps):
                    stopped = True
                    break
                wanted = index >= first and (index - first) % r.stride == 0
                if not self._cap.grab():
                    break
                self.decoded += 1
                if wanted:
                    ok, bgr = self._cap.retrieve()
                    if not ok or bgr is None:
                        break
                    kept += 1
                    yield Frame(index, index / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                index += 1
        finally:
            self._cap.release()
        self._check_end(index, kept, stopped)

    def _check_end(self, index: int, kept: int, stopped: bool) -> None:
        """Raise when nothing was decoded, or when the file ended well before its stated count."""
        if self.decoded == 0:
            raise ImageError(self.path, "empty", "no decodable frame (an empty, truncated or corrupt video); "
                                                 "re-encode or re-download it")
        count = self.info.frames
        if not stopped and count and count - index > max(1, count // 100):
            raise ImageError(self.path, "truncated",
                             f"the video ends at frame {index} of the {count} its header states (truncated or "
                             "corrupt); re-encode or re-download it")
        if kept == 0:
            raise ImageError(self.path, "empty", f"no frame in the range asked (--start / --end): the video has "
                                                 f"{index} frames, {index / self.info.fps:.3f} s")
