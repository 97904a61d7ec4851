"""Real RGB frames for calibrating and verifying a frame-encoder export.

`load_frames(source, size=224, per_video=48)` decodes each video of `source` (a video file, a
folder of videos, or a comma-separated list) with PyAV, resizes every frame to size x size with
FFmpeg's bilinear scaler (the same resize as the golden frames), and keeps `per_video` frames
evenly spaced over the clip. `split(frames)` interleaves them into a calibration half and a
held-out half (even / odd positions), so int8 is judged on frames it was not calibrated on.
"""
import dataclasses
import glob
import os

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclasses.dataclass
class Frames:
    rgb: np.ndarray   # [N, size, size, 3] uint8
    ids: list         # N names "<video>@<frame index>"
    source: str

    def __len__(self):
        return len(self.ids)

    def subset(self, idx):
        return Frames(self.rgb[idx], [self.ids[i] for i in idx], self.source)


def video_files(source):
    """The video paths named by `source` (file, folder or comma-separated list)."""
    paths = []
    for part in str(source).split(","):
        part = part.strip()
        if os.path.isdir(part):
            found = sorted(p for p in glob.glob(os.path.join(part, "*"))
                           if p.lower().endswith(VIDEO_EXTENSIONS))
            if not found:
                raise ValueError(f"--calibration {part}: folder holds no video files "
                                 f"({', '.join(VIDEO_EXTENSIONS)})")
            paths += found
        elif os.path.isfile(part):
            paths.append(part)
        else:
            raise FileNotFoundError(f"--calibration {part}: no such file or folder")
    return paths


def _decode(path, size):
    import av
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"--calibration {path}: no video stream")
            stream = container.streams.video[0]
            return [f.to_ndarray(width=size, height=size, format="rgb24",
                                 interpolation="BILINEAR") for f in container.decode(stream)]
    except av.FFmpegError as err:
        raise ValueError(f"--calibration {path}: not a readable video ({err})") from None


def load_frames(source, size=224, per_video=48):
    """Frames(rgb [N, size, size, 3] uint8, ids) from the videos of `source`."""
    rgb, ids = [], []
    for path in video_files(source):
        frames = _decode(path, size)
        if not frames:
            raise ValueError(f"--calibration {path}: the video has no decodable frame")
        keep = np.unique(np.linspace(0, len(frames) - 1, min(per_video, len(frames))).round()
                         .astype(int))
        name = os.path.basename(path)
        rgb += [frames[i] for i in keep]
        ids += [f"{name}@{i}" for i in keep]
    return Frames(np.stack(rgb), ids, str(source))


def split(frames):
    """(calibration, held_out): even and odd positions of `frames`."""
    idx = np.arange(len(frames))
    return frames.subset(idx[0::2]), frames.subset(idx[1::2])
