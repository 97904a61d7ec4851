"""Test helper: tiny videos written with PyAV, whose frame j is a solid grey `value(j)`.

`write_video(path, pts, time_base, ...)` encodes one frame per timestamp (in `time_base` units),
so a test knows exactly which source frame is on screen at any time; `frame_index(rgb)` reads
the index back from a decoded frame."""
import fractions
import socket
import threading
import time

import numpy as np

STEP = 8  # grey levels between consecutive frames (index j -> (j * STEP) % 256)


def value(j):
    return (j * STEP) % 256


def frame_index(rgb):
    """Frame index (mod 32) of a decoded grey frame (robust to small codec error)."""
    return int(round(float(np.mean(rgb)) / STEP)) % (256 // STEP)


def write_video(path, pts, time_base, size=(16, 16), pix_fmt="gray", codec="ffv1",
                container=None, rate=10, values=None, codec_options=None):
    import av
    out = av.open(str(path), "w", format=container)
    stream = out.add_stream(codec, rate=rate, options=codec_options or {})
    stream.height, stream.width = size
    stream.pix_fmt = pix_fmt
    tb = fractions.Fraction(time_base)
    stream.codec_context.time_base = tb
    for j, p in enumerate(pts):
        v = values[j] if values is not None else value(j)
        arr = np.empty((size[0], size[1], 3), np.uint8)
        arr[:] = v
        frame = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format=pix_fmt)
        frame.pts, frame.time_base = int(p), tb
        for pkt in stream.encode(frame):
            out.mux(pkt)
    for pkt in stream.encode():
        out.mux(pkt)
    out.close()
    return str(path)


def write_audio_only(path, seconds=0.5, rate=8000):
    """A .wav file: a valid media file without a video stream."""
    import wave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.zeros(int(seconds * rate), np.int16).tobytes())
    return str(path)


def camera_server(data, stall_s=None):
    """A TCP 'camera' on 127.0.0.1 that sends `data` (an MPEG-TS stream) to its first client,
    then stalls `stall_s` seconds with the connection open (or closes it at once when None).
    Returns the URL tcp://127.0.0.1:PORT."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        conn.sendall(data)
        if stall_s:
            time.sleep(stall_s)
        conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"tcp://127.0.0.1:{port}"


def camera_stream(path, frames=40, fps=10):
    """MPEG-TS bytes of a `frames`-frame 32x32 video at `fps` (what a network camera sends)."""
    write_video(path, np.arange(frames), fractions.Fraction(1, fps), size=(32, 32),
                pix_fmt="yuv420p", codec="mpeg4", container="mpegts", rate=fps)
    with open(path, "rb") as f:
        return f.read()
