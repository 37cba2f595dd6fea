"""Video file decoding and encoding with PyAV.

Shared by the TFRecord writer (`keras-vswin write-shards`), the prediction command and the tests.
Frames are RGB `uint8` arrays of shape `(height, width, 3)`; a decoded video is
`(frames, height, width, 3)`. Every decoder (H.264/HEVC/VP9/AV1, ...) and container
(mp4/mkv/webm/avi, ...) that PyAV's bundled FFmpeg reads is supported; grayscale, paletted and
alpha pixel formats are converted to RGB (alpha is dropped).

Problems with an input file (missing, empty, not a video, truncated, undecodable) raise
`VideoDecodeError`, a `ValueError` whose message names the file.

Example:

```python
from keras_vswin import video

info = video.probe_video("clip.mp4")           # VideoInfo(width=..., fps=..., ...)
clip = video.read_video("clip.mp4", fps=15, short_side=256)
clip.frames.shape                              # (frames, 256, 341, 3), uint8
jpegs = list(video.iter_jpeg_frames("clip.mp4", short_side=256))  # JPEG bytes, for shards
video.write_video("copy.mp4", clip.frames, fps=clip.fps)
```
"""

from __future__ import annotations

import dataclasses
import os
from fractions import Fraction

import numpy as np

__all__ = [
    "DecodedVideo",
    "VideoDecodeError",
    "VideoInfo",
    "iter_frames",
    "iter_jpeg_frames",
    "probe_video",
    "read_video",
    "resized_shape",
    "write_video",
]


class VideoDecodeError(ValueError):
    """A video file cannot be (completely) decoded.

    Attributes:
        path: the file, as given by the caller.
        reason: what went wrong, without the file name.
    """

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"Cannot decode video {self.path!r}: {self.reason}")

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.path, self.reason))


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """Container-level facts about a video stream (nothing is decoded).

    Attributes:
        path: the file.
        width, height: coded frame size in pixels.
        fps: average frame rate (0.0 when the container does not say).
        num_frames: frame count declared by the container (0 when unknown).
        duration: seconds (0.0 when unknown).
        codec: decoder name, e.g. `"h264"`.
        pix_fmt: pixel format, e.g. `"yuv420p"`.
    """

    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    codec: str
    pix_fmt: str


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
    """Frames of a decoded video.

    Attributes:
        frames: `(frames, height, width, 3)` uint8 RGB.
        fps: frame rate of `frames` (the requested rate when resampled, else the native one).
        source_fps: native average frame rate of the file.
        source_size: `(height, width)` of the file before resizing.
    """

    frames: np.ndarray
    fps: float
    source_fps: float
    source_size: tuple[int, int]


def resized_shape(height, width, short_side):
    """Frame size `(height, width)` after scaling the shorter side to `short_side`.

    The aspect ratio is kept (the long side is rounded to the nearest pixel). `short_side`
    None or 0 keeps the size. Frames are scaled up as well as down.
    """
    if not short_side:
        return int(height), int(width)
    if short_side < 0:
        raise ValueError(f"short_side must be a positive integer or None, got {short_side}")
    if height <= width:
        return int(short_side), max(1, int(round(width * short_side / height)))
    return max(1, int(round(height * short_side / width))), int(short_side)


def _interpolation():
    from av.video.reformatter import Interpolation

    # Area averaging when scaling; accurate rounding and full chroma interpolation keep the
    # colours within a level of the source (the fast path is off by ~2 levels when scaling).
    return Interpolation.AREA | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


def _is_url(path):
    return "://" in str(path)


def _open_input(path):
    """Opens `path` with PyAV; `gs://` and other `tf.io.gfile` URLs are read through gfile."""
    import av

    path = os.fspath(path) if not isinstance(path, str) else path
    if _is_url(path):
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise VideoDecodeError(path, "file not found")
        if tf.io.gfile.stat(path).length == 0:
            raise VideoDecodeError(path, "file is empty (0 bytes)")
        handle = tf.io.gfile.GFile(path, "rb")
        try:
            return av.open(handle, mode="r")
        except av.FFmpegError as error:
            handle.close()
            raise VideoDecodeError(path, _ffmpeg_reason(error)) from error
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if os.path.isdir(path):
        raise VideoDecodeError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")
    try:
        return av.open(path, mode="r")
    except av.FFmpegError as error:
        raise VideoDecodeError(path, _ffmpeg_reason(error)) from error
    except (OSError, UnicodeDecodeError) as error:
        raise VideoDecodeError(path, str(error)) from error


def _ffmpeg_reason(error):
    message = getattr(error, "strerror", None) or str(error)
    return f"FFmpeg: {message}"


def _video_stream(container, path):
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream in the file")
    return container.streams.video[0]


def _stream_fps(stream):
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def probe_video(path):
    """Reads the container header of `path` and returns a `VideoInfo` (decodes nothing)."""
    container = _open_input(path)
    try:
        stream = _video_stream(container, path)
        context = stream.codec_context
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        return VideoInfo(
            path=str(path),
            width=int(context.width),
            height=int(context.height),
            fps=_stream_fps(stream),
            num_frames=int(stream.frames or 0),
            duration=duration,
            codec=context.name,
            pix_fmt=context.format.name if context.format is not None else "",
        )
    finally:
        container.close()


def iter_frames(path, fps=None, short_side=None, check_complete=True, threads=None):
    """Decodes `path` frame by frame.

    Args:
        path: a local path or a `tf.io.gfile` URL (`gs://...`).
        fps: None keeps every decoded frame (the native rate). A number resamples to that rate:
            output frame `k` (time `k / fps`) is the source frame nearest in time, so frames are
            dropped when slowing down and repeated when speeding up.
        short_side: None keeps the size; an integer scales every frame so that its shorter side
            has this length (aspect ratio kept, see `resized_shape`).
        check_complete: raise `VideoDecodeError` when fewer frames decode than the container
            declares (a truncated or damaged file). Disable for files with unreliable headers.
        threads: decoder and scaler threads; None lets FFmpeg choose (all cores). Use 1 when
            several processes decode at once.

    Yields:
        `(height, width, 3)` uint8 RGB arrays.

    Raises:
        VideoDecodeError: the file is missing, empty, not a video, truncated or undecodable.
    """
    return _iter_converted(
        path, fps, short_side, check_complete, threads, _RGB_TARGET, _planar_to_array
    )


def iter_jpeg_frames(
    path, quality=90, fps=None, short_side=None, check_complete=True, threads=None
):
    """Decodes `path` and yields every output frame as JPEG bytes (baseline JFIF, 4:2:0).

    Arguments as in `iter_frames`; `quality` is libjpeg's 1-100. FFmpeg's scaler writes the
    frames straight in JPEG's colour space (full-range BT.601 YUV 4:2:0, from any source pixel
    format, range and matrix) and libjpeg-turbo (`simplejpeg`) compresses those planes, so no
    RGB frame is built. The bytes therefore differ from a JPEG of the `iter_frames` arrays, but
    decode as close to those arrays: solid colours within 3 levels (5 for BT.709 sources), and a
    mean absolute difference within 0.3 levels of that of PIL's JPEG of the arrays (2.1 vs 1.9
    levels at q90 on the writer benchmark's 640x360 clips scaled to 256; up to a level more on
    tiny frames of sharp colour edges, as chroma keeps the source's siting).
    """
    quality = int(quality)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    return _iter_converted(
        path,
        fps,
        short_side,
        check_complete,
        threads,
        _JPEG_TARGET,
        lambda f: _yuv420_to_jpeg(f, quality),
    )


_RGB_TARGET = {"format": "gbrp"}
# JFIF's colour space. Said explicitly: the scaler otherwise keeps the source's matrix (BT.709
# for most HD video) and range tags, which a JPEG decoder would misread.
_JPEG_TARGET = {"format": "yuvj420p", "dst_colorspace": "ITU601", "dst_color_range": "JPEG"}


def _planar_to_array(frame):
    return frame.to_ndarray()  # gbrp -> (height, width, 3) RGB


def _plane_array(plane):
    """A plane's pixels as a `(height, width)` uint8 view (rows keep the frame's line size)."""
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def _yuv420_to_jpeg(frame, quality):
    import simplejpeg

    luma, blue, red = (_plane_array(plane) for plane in frame.planes)
    height, width = luma.shape
    if height % 2 or width % 2:
        # For 4:2:0, libjpeg-turbo reads the luma plane rounded up to even rows and columns, i.e.
        # bytes past an odd edge (the frame's uninitialised line padding, or past the array):
        # give it a copy with the edge row and column repeated, so the bytes are deterministic.
        padded = np.empty((height + height % 2, width + width % 2), np.uint8)
        padded[:height, :width] = luma
        padded[:height, width:] = luma[:, width - 1 :]
        padded[height:] = padded[height - 1]
        luma = padded[:height, :width]
    return simplejpeg.encode_jpeg_yuv_planes(luma, blue, red, quality=quality)


def _iter_converted(path, fps, short_side, check_complete, threads, target, convert):
    """Decodes, resamples, scales to `target` (reformat arguments: the pixel format and colour
    space) and yields `convert(frame)` per output frame.

    Work is done in the cheapest order: frames that resampling drops are never scaled, a
    repeated frame is converted once, and FFmpeg's scaler writes planar formats (`gbrp` for RGB:
    its SIMD path is about 3x faster than packed `rgb24` and gives the same pixels).
    """
    import av
    from av.video.reformatter import VideoReformatter

    interpolation = _interpolation()
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive or None, got {fps}")
    container = _open_input(path)
    try:
        stream = _video_stream(container, path)
        if threads is None:
            stream.thread_type = "AUTO"
        else:
            stream.codec_context.thread_count = int(threads)
            stream.thread_type = "AUTO" if threads != 1 else "SLICE"
        source_fps = _stream_fps(stream)
        declared = int(stream.frames or 0)
        # One scaler for all frames: `frame.reformat` would set up a new one for every frame.
        scaler = VideoReformatter()
        reformat_args = {**target, "interpolation": interpolation}
        if threads is not None:
            reformat_args["threads"] = int(threads)
        target_size = None
        resampler = _Resampler(fps, source_fps) if fps is not None else None
        last_source = last_output = None
        decoded = 0
        try:
            for frame in container.decode(stream):
                if target_size is None:
                    target_size = resized_shape(frame.height, frame.width, short_side)
                    reformat_args["width"], reformat_args["height"] = target_size[::-1]
                decoded += 1
                selected = (frame,) if resampler is None else resampler.push(frame, frame.time)
                for source in selected:
                    if source is not last_source:
                        last_source = source
                        last_output = convert(scaler.reformat(source, **reformat_args))
                    yield last_output
        except av.FFmpegError as error:
            raise VideoDecodeError(
                path, f"decoding failed after {decoded} frame(s): {_ffmpeg_reason(error)}"
            ) from error
        if resampler is not None:
            for source in resampler.flush():
                if source is not last_source:
                    last_source = source
                    last_output = convert(scaler.reformat(source, **reformat_args))
                yield last_output
        if decoded == 0:
            raise VideoDecodeError(path, "no frame could be decoded")
        if check_complete and declared and decoded < declared:
            raise VideoDecodeError(
                path,
                f"truncated or damaged: decoded {decoded} of the {declared} frames the "
                "container declares",
            )
    finally:
        container.close()


class _Resampler:
    """Nearest-in-time frame selection for a constant output rate (streaming)."""

    def __init__(self, fps, source_fps):
        self.period = 1.0 / float(fps)
        self.source_period = 1.0 / source_fps if source_fps else None
        self.next_index = 0
        self.previous = None
        self.previous_time = None
        self.first_time = None
        self.count = 0

    def _frame_time(self, time):
        if time is None:
            if self.source_period is None:
                raise ValueError("cannot resample a video without timestamps or frame rate")
            return self.count * self.source_period
        if self.first_time is None:
            self.first_time = time
        return time - self.first_time

    def push(self, frame, time):
        time = self._frame_time(time)
        self.count += 1
        if self.previous is not None:
            boundary = 0.5 * (self.previous_time + time)
            while self.next_index * self.period <= boundary + 1e-9:  # ties: earlier frame
                self.next_index += 1
                yield self.previous
        self.previous, self.previous_time = frame, time

    def flush(self):
        if self.previous is None:
            return
        # The last source frame lasts one source period: the output covers the same duration.
        end = self.previous_time + (self.source_period or self.period)
        while self.next_index == 0 or self.next_index * self.period < end - 1e-9:
            self.next_index += 1
            yield self.previous


def read_video(path, fps=None, short_side=None, check_complete=True, threads=None):
    """Decodes a whole video into memory; arguments as in `iter_frames`.

    Returns:
        A `DecodedVideo` with `frames` of shape `(frames, height, width, 3)` uint8.
    """
    info = probe_video(path)
    frames = list(
        iter_frames(
            path, fps=fps, short_side=short_side, check_complete=check_complete, threads=threads
        )
    )
    return DecodedVideo(
        frames=np.stack(frames),
        fps=float(fps) if fps is not None else info.fps,
        source_fps=info.fps,
        source_size=(info.height, info.width),
    )


_INPUT_FORMATS = {2: "gray", 3: "rgb24", 4: "rgba"}


def write_video(path, frames, fps=25, codec="libx264", pix_fmt="yuv420p", options=None):
    """Encodes frames to a video file (local path).

    Args:
        path: output file; the container follows the extension (`.mp4`, `.mkv`, `.webm`, ...).
        frames: uint8 array `(frames, height, width, 3)` RGB, `(frames, height, width, 4)` RGBA
            or `(frames, height, width)` grayscale.
        fps: frame rate (int, float or Fraction).
        codec: FFmpeg encoder name, e.g. `"libx264"`, `"libx265"`, `"libvpx-vp9"`, `"ffv1"`.
        pix_fmt: stored pixel format; `"yuv420p"` needs an even width and height.
        options: encoder options; default for libx264 is `{"crf": "18", "preset": "veryfast"}`.
    """
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim == 4 and frames.shape[-1] in (3, 4):
        input_format = _INPUT_FORMATS[frames.shape[-1]]
    elif frames.ndim == 3:
        input_format = "gray"
    else:
        raise ValueError(
            f"frames must have shape (frames, height, width[, 3 or 4]), got {frames.shape}"
        )
    if len(frames) == 0:
        raise ValueError("frames is empty: a video needs at least one frame")
    height, width = frames.shape[1:3]
    if pix_fmt.startswith(("yuv420", "yuvj420")) and (height % 2 or width % 2):
        raise ValueError(
            f"pix_fmt {pix_fmt!r} needs an even width and height, got {width}x{height}"
        )
    if options is None:
        options = {"crf": "18", "preset": "veryfast"} if codec == "libx264" else {}
    rate = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
    container = av.open(os.fspath(path), mode="w")
    try:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = int(width), int(height), pix_fmt
        stream.options = {str(k): str(v) for k, v in options.items()}
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=input_format)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
