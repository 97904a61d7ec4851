"""Video frames -> the frames each feature snippet needs, on the recipe's time grid (PyAV + numpy).

Shared by the device (`asl-edge run --video`) and the server (`asl-extract-features`), so both
cut a video into the same snippets: like `edge.postprocess`, the one implementation the library
(`asl_tf.features`) imports from edge/; it imports no runtime, stream or model. See
`edge.encoder` for the frame encoder and `edge.video` for the device pipeline.

Time grid (all times in seconds from the first decoded frame's presentation time):

* The recipe resamples the video to `fps` frames per second: resampled frame `j` is the source
  frame on screen at `(j + 0.5) / fps` (the last frame whose presentation timestamp is <= that
  time), so variable frame rate and odd rates (23.976, 10, 29.97) resample exactly; the rate
  of the container is never trusted, only the timestamps.
* Snippet `i` spans resampled frames `[i * feat_stride, i * feat_stride + num_frames)`; its
  centre is `(i * feat_stride + num_frames / 2) / fps` s, the time conversion of the detector.
* Only `frames_per_snippet = k` of those frames are decoded to RGB and encoded: offsets
  `m * q + (q - 1) // 2` (m < k, q = num_frames / k, which must be an odd integer), evenly
  spaced and symmetric about the snippet's centre, so their mean time is exactly the centre.
  Every other frame is decoded by FFmpeg (a codec cannot skip them) but never converted.
* A video of `duration` s (last timestamp + that frame's duration) has
  `n = floor(duration * fps)` resampled frames and `T = (n - num_frames) // feat_stride + 1`
  snippets (0 when `n < num_frames`: shorter than one snippet). A stream emits snippet `i` as
  soon as its frames are known and a frame at or past its end has arrived, so a stream and the
  whole file give the same snippets.
"""
import heapq
import logging
import math
import os

import numpy as np

log = logging.getLogger("edge.frames")

_EPS = 1e-6


class VideoError(ValueError):
    """A video that cannot be used: not a video, no video stream, corrupt, too short."""


def snippet_offsets(num_frames, frames_per_snippet):
    """The resampled frames encoded in a snippet, as offsets from its first frame.

    `[m * q + (q - 1) // 2 for m < k]` with `q = num_frames / k` an odd integer (so the offsets
    are symmetric about the snippet's centre `num_frames / 2 - 0.5`)."""
    n, k = float(num_frames), int(frames_per_snippet)
    if k < 1 or not n.is_integer() or n < 1:
        raise ValueError(f"num_frames {num_frames} / frames_per_snippet {frames_per_snippet}: "
                         "both must be positive integers")
    n = int(n)
    if n % k or (n // k) % 2 == 0:
        raise ValueError(f"frames_per_snippet: {k} frames cannot sit symmetrically in a snippet of "
                         f"num_frames = {n} (num_frames / frames_per_snippet must be an odd "
                         "integer)")
    q = n // k
    return [m * q + (q - 1) // 2 for m in range(k)]


class SnippetGrid:
    """The snippet timing of a recipe: `fps` (resampled rate), `feat_stride`, `num_frames`
    (resampled frames, integers) and `frames_per_snippet`."""

    def __init__(self, fps, feat_stride, num_frames, frames_per_snippet=1):
        self.fps = float(fps)
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps: must be a positive number, got {fps}")
        for name, value in (("feat_stride", feat_stride), ("num_frames", num_frames)):
            if not float(value).is_integer() or float(value) < 1:
                raise ValueError(f"{name}: must be a positive whole number of frames, got {value}")
        self.feat_stride, self.num_frames = int(feat_stride), int(num_frames)
        self.offsets = snippet_offsets(self.num_frames, frames_per_snippet)
        self.k = len(self.offsets)

    def sample_time(self, g):
        """Time (s) of the g-th encoded frame (snippet g // k, its (g % k)-th offset)."""
        i, m = divmod(int(g), self.k)
        return (i * self.feat_stride + self.offsets[m] + 0.5) / self.fps

    def centre(self, i):
        return (i * self.feat_stride + self.num_frames / 2.0) / self.fps

    def end(self, i):
        return (i * self.feat_stride + self.num_frames) / self.fps

    def num_snippets(self, duration):
        """Snippets of a video of `duration` seconds (0 if shorter than one snippet)."""
        n = math.floor(float(duration) * self.fps + _EPS)
        return 0 if n < self.num_frames else (n - self.num_frames) // self.feat_stride + 1

    def as_dict(self):
        return {"fps": self.fps, "feat_stride": self.feat_stride, "num_frames": self.num_frames,
                "frames_per_snippet": self.k, "offsets": list(self.offsets)}


class SnippetSampler:
    """Picks, from frames pushed in presentation order, the ones each snippet needs.

    `push(t, frame)` (t in seconds from the first frame, frame any object) returns the snippets
    completed so far as `(i, [k converted frames])`; `finish(duration)` returns the rest of the
    video's `grid.num_snippets(duration)` snippets. `convert(frame)` is called once per frame
    that is used (never for the others)."""

    def __init__(self, grid, convert):
        self.grid, self.convert = grid, convert
        self._sched = 0          # next snippet whose sample slots are not scheduled yet
        self._heap = []          # (time, slot) scheduled, not filled yet
        self._next = 0           # next snippet to emit
        self._slots = {}         # slot -> converted frame, for snippets not yet emitted
        self._prev = None        # (t, frame) of the frame on screen now
        self._conv = None        # (frame, converted) cache: one frame may fill several slots
        self.last_time = None
        self.skipped = 0         # frames with a non-increasing timestamp (dropped)

    def _fill(self, until):
        """Give the frame on screen (`_prev`) to every sample slot timed before `until`.

        Slots are taken in time order from a heap: with overlapping snippets (num_frames >
        feat_stride) a later snippet's first samples come before an earlier one's last."""
        k = self.grid.k
        while True:
            while self.grid.sample_time(self._sched * k) < until:  # earliest sample of a snippet
                for m in range(k):
                    g = self._sched * k + m
                    heapq.heappush(self._heap, (self.grid.sample_time(g), g))
                self._sched += 1
            if not self._heap or self._heap[0][0] >= until:
                return
            _, g = heapq.heappop(self._heap)
            frame = self._prev[1]
            if self._conv is None or self._conv[0] is not frame:
                self._conv = (frame, self.convert(frame))
            self._slots[g] = self._conv[1]

    def _ready(self, limit_snippets=None, known_until=None):
        out, k = [], self.grid.k
        while all(self._next * k + m in self._slots for m in range(k)):
            i = self._next
            if limit_snippets is not None and i >= limit_snippets:
                break
            if known_until is not None and self.grid.end(i) > known_until + _EPS:
                break
            out.append((i, [self._slots.pop(i * k + m) for m in range(k)]))
            self._next += 1
        return out

    def push(self, t, frame):
        t = float(t)
        if self._prev is not None and t <= self._prev[0]:
            self.skipped += 1
            return []
        if self._prev is not None:
            self._fill(until=t)
        self._prev = (t, frame)
        self.last_time = t
        return self._ready(known_until=t)

    def finish(self, duration):
        """All remaining snippets of a video of `duration` s (the last frame fills the end)."""
        total = self.grid.num_snippets(duration)
        if self._prev is None or total <= self._next:
            self._slots.clear()
            return []
        self._fill(until=self.grid.sample_time(total * self.grid.k - 1) + _EPS)
        out = self._ready(limit_snippets=total)
        self._slots.clear()
        self._heap = []
        self._conv = None
        return out


def _is_live(src):
    return "://" in src or src.startswith("/dev/")


class VideoReader:
    """A video opened with PyAV: a file, a URL FFmpeg reads (rtsp://, tcp://, http://) or a
    camera (`/dev/videoN`, read with v4l2).

    Args:
      src: what to open. threads: decoder threads (None: FFmpeg's default).
      timeout: seconds without data after which a live source counts as stopped (its stream
        then ends cleanly with what it had).
      strict: a decode error or a truncated file raises VideoError (default for files);
        otherwise the stream ends at the error with a warning (default for live sources).

    `frames()` yields `(t, av.VideoFrame)` with t in seconds from the first frame; afterwards
    `duration` (s, last timestamp + that frame's duration), `frame_count`, `source_fps`.
    """

    def __init__(self, src, threads=None, timeout=10.0, strict=None):
        import av  # optional dependency of the edge package: pip install 'asl-tf-edge[video]'

        self._av = av
        self.src = src = os.fspath(src)
        live = _is_live(src)
        self.strict = (not live) if strict is None else bool(strict)
        if not live and not os.path.exists(src):
            raise FileNotFoundError(f"{src}: video file not found")
        if not live and os.path.isdir(src):
            raise VideoError(f"{src}: is a folder, not a video")
        self._timeout = timeout
        kwargs = {"timeout": timeout} if live and timeout else {}
        if src.startswith("/dev/video"):
            kwargs["format"] = "v4l2"
        try:
            self.container = av.open(src, mode="r", **kwargs)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
            raise VideoError(f"{src}: not a readable video ({_msg(err)})") from None
        if not self.container.streams.video:
            kinds = sorted({s.type for s in self.container.streams}) or ["none"]
            self.container.close()
            raise VideoError(f"{src}: no video stream (streams: {', '.join(kinds)})")
        self.stream = self.container.streams.video[0]
        if threads:
            self.stream.codec_context.thread_count = int(threads)
        rate = self.stream.average_rate
        self.source_fps = float(rate) if rate else None
        self.declared_duration = _declared_duration(self.container, self.stream)
        self.frame_count = 0
        self.duration = 0.0
        self._last_dur = None
        self.stopped_by = None     # a live source's end: "eof", "timeout" or the error text

    def frames(self):
        av = self._av
        t0 = last = None
        gaps = []
        tb = self.stream.time_base
        try:
            for frame in self.container.decode(self.stream):
                t = frame.time
                if t is None:  # no timestamp: continue at the container's rate
                    t = (last + (gaps[-1] if gaps else 1.0 / (self.source_fps or 30.0))) \
                        if last is not None else 0.0
                elif t0 is None:
                    t0 = t
                t = t - (t0 or 0.0)
                if last is not None and t > last:
                    gaps = (gaps + [t - last])[-16:]
                d = frame.duration * tb if frame.duration and tb else None
                self._last_dur = float(d) if d else None
                last = t if last is None else max(last, t)
                self.frame_count += 1
                self.duration = last + (self._last_dur or (float(np.median(gaps)) if gaps else
                                        1.0 / (self.source_fps or 30.0)))
                yield t, frame
        except (av.FFmpegError, OSError) as err:
            text = _msg(err)
            if isinstance(err, getattr(av, "ExitError", ())):  # the open/read timeout fired
                text = f"timeout: no data for {self._timeout} s"
            if self.strict:
                raise VideoError(f"{self.src}: corrupt video: decoding failed after "
                                 f"{self.frame_count} frames ({text})") from None
            self.stopped_by = text
            log.warning("%s: the stream stopped after %d frames (%.2f s): %s", self.src,
                        self.frame_count, self.duration, text)
        else:
            self.stopped_by = "eof"
        finally:
            self.container.close()
        if self.frame_count == 0:
            raise VideoError(f"{self.src}: the video has no decodable frame")
        dd = self.declared_duration
        if self.strict and dd and self.duration < 0.9 * dd - 0.5:
            raise VideoError(f"{self.src}: truncated video: the container says {dd:.2f} s, only "
                             f"{self.duration:.2f} s ({self.frame_count} frames) decode")

    def close(self):
        self.container.close()


def _declared_duration(container, stream):
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1e6  # AV_TIME_BASE
    return None


def _msg(err):
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def rgb_converter(size, interpolation="BILINEAR"):
    """`frame -> uint8 [size, size, 3]` RGB: FFmpeg's swscale resizes and converts from the
    frame's own pixel format (every software format FFmpeg knows) in one pass."""
    def convert(frame):
        try:
            return frame.to_ndarray(width=size, height=size, format="rgb24",
                                    interpolation=interpolation)
        except Exception as err:  # PyAV raises ValueError or FFmpegError subclasses
            fmt = getattr(getattr(frame, "format", None), "name", "?")
            raise VideoError(f"unsupported pixel format {fmt}: cannot convert it to RGB "
                             f"({_msg(err)})") from None
    return convert


def iter_snippets(reader, grid, convert):
    """`(i, uint8 [k, size, size, 3])` for each snippet of `reader`'s video, as they complete.

    Raises VideoError when the video is shorter than one snippet."""
    sampler = SnippetSampler(grid, convert)
    emitted = 0
    for t, frame in reader.frames():
        for i, frames in sampler.push(t, frame):
            emitted += 1
            yield i, np.stack(frames)
    for i, frames in sampler.finish(reader.duration):
        emitted += 1
        yield i, np.stack(frames)
    if emitted == 0:
        raise VideoError(f"{reader.src}: the video is {reader.duration:.3g} s "
                         f"({reader.frame_count} frames), shorter than one snippet "
                         f"({grid.num_frames / grid.fps:.3g} s)")
