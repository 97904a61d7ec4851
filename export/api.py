"""`export_model`: export a detector, verify it against Keras, and write it only if it passes.

Everything is built in a temporary folder beside `out`; the verified artifact (plus its
`<file>.meta.json` sidecar) is renamed into place at the end. A failed verification raises
`VerificationError` (a ValueError: the CLI exits 2) and leaves nothing behind.
`export_report.json` beside the output (inside PATH for a SavedModel) collects one entry per
exported file.
"""
import json
import os
import shutil
import tempfile

import numpy as np
from absl import logging

from export import calibration as calib
from export import metadata
from export.verify import VerificationError, compare, compare_detect, median_latency_ms

FORMATS = ("saved_model", "tflite", "onnx")
REPORT_NAME = "export_report.json"
#: Calibration windows for int8 (representative dataset).
INT8_WINDOWS = 100


def load_model(path):
    """Load a `.keras` file and check that it is an asl-tf detector."""
    import keras
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--model {path}: no such file")
    import asl_tf.model.detector  # noqa: F401  (registers ASLDetector for deserialization)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # keras raises ValueError/TypeError/zipfile errors for foreign files
        raise ValueError(f"--model {path}: not an asl-tf model file ({str(err).splitlines()[0][:200]})") \
            from None
    try:
        metadata.check_detector(model)
    except ValueError as err:
        raise ValueError(f"--model {path}: {err}") from None
    return model


def _size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def _check_out(fmt, out, force):
    out = os.fspath(out)
    final = os.path.join(out, "1") if fmt == "saved_model" else out
    if os.path.lexists(final) and not force:
        raise FileExistsError(f"--out {final} exists (use --force to replace it)")
    if fmt != "saved_model" and os.path.isdir(out):
        raise IsADirectoryError(f"--out {out} is a folder; give a file name for {fmt}")
    return final


def _make_dirs(path):
    """os.makedirs that returns the folders it created (to remove them on failure)."""
    created = []
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        created.append(path)
        path = os.path.dirname(path)
    for d in reversed(created):
        os.makedirs(d, exist_ok=True)
    return created


def _resolve_meta(video_meta, calibration):
    meta = {"feat_stride": None, "num_frames": None, "fps": None}
    if calibration is not None and str(calibration).endswith((".yaml", ".yml")) \
            and os.path.isfile(calibration):
        meta.update({k: v for k, v in calib.video_meta_from_config(calibration).items()
                     if v is not None})
    meta.update({k: v for k, v in (video_meta or {}).items() if v is not None})
    return meta


def _verify_meta(meta):
    """Video meta for verification decoding (grid units when the sidecar has no defaults)."""
    return {"feat_stride": float(meta["feat_stride"] or 1.0),
            "num_frames": float(meta["num_frames"] or 0.0), "fps": float(meta["fps"] or 1.0)}


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_table(rows):
    """Plain-text table of export reports (one row per export)."""
    head = ("format", "quantize", "size MB", "max|dlogit|", "max|doffset|", "mAP keras",
            "mAP export", "dmAP", "ms@1t", "ms@2t", "ok")
    lines = [" | ".join(head)]
    for r in rows:
        v, lat = r.get("verification") or {}, r.get("latency_ms") or {}
        lines.append(" | ".join([
            r["format"], r["quantize"], f"{r['size_bytes'] / 1e6:.3f}",
            _fmt(v.get("max_diff_cls_logits"), ".2e"), _fmt(v.get("max_diff_offsets"), ".2e"),
            _fmt(v.get("mAP_keras"), ".2f"), _fmt(v.get("mAP_export"), ".2f"),
            _fmt(v.get("mAP_delta"), "+.2f"), _fmt(lat.get("1"), ".1f"), _fmt(lat.get("2"), ".1f"),
            "yes" if r.get("passed", True) else "NO"]))
    return "\n".join(lines)


def _write_report(report_path, key, entry):
    data = {"exports": {}}
    if os.path.isfile(report_path):
        try:
            with open(report_path) as f:
                data = json.load(f)
            data.setdefault("exports", {})
        except (OSError, json.JSONDecodeError):
            logging.warning("%s is not a readable report; replacing it", report_path)
            data = {"exports": {}}
    data["exports"][key] = entry
    metadata.write_json_atomic(report_path, data)


def _int8_windows(windows):
    """Calibrate int8 on fully valid windows when there are enough: padded frames put -1e4
    key-mask logits and LayerNorm-of-zeros (rsqrt(eps)) into the calibrated ranges and wreck
    the int8 scales of every window; at run time those values saturate harmlessly."""
    full = np.flatnonzero(windows.mask.all(axis=1))
    if len(full) >= max(1, min(8, len(windows) // 2)):
        return calib.Windows(windows.feats[full], windows.mask[full],
                             [windows.ids[i] for i in full], windows.source)
    logging.warning("int8 calibration: only %d of %d windows are fully valid; calibrating on "
                    "all, padded ones included", len(full), len(windows))
    return windows


def export_model(model, fmt, out, *, quantize="none", seq_len=None, calibration=None,
                 force=False, verify=True, video_meta=None, limits=None, verify_windows=8,
                 threads=(1, 2), latency_runs=5):
    """Export `model` (an ASLDetector or a `.keras` path) as `fmt` to `out`; return the report.

    fmt: saved_model (out = PATH, written to PATH/1/) | tflite | onnx (out = file).
    quantize: none | fp16 | dynamic | int8 (TFLite only). seq_len: the window T (fixed for
    TFLite/ONNX; for a SavedModel only the verification window), default max_seq_len.
    calibration: a config (.yaml, its training split) or a folder of [T, C] .npy files.
    video_meta: {feat_stride, num_frames, fps} written to the sidecar (a config's dataset
    section fills what is missing). limits: overrides {max_diff, max_map_drop}.
    Raises ValueError/FileNotFoundError/FileExistsError on bad input, VerificationError when
    the export is outside its limits (nothing is written then).
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: must be one of {', '.join(FORMATS)}")
    if quantize not in metadata.QUANTIZE_MODES:
        raise ValueError(f"--quantize {quantize!r}: must be one of "
                         f"{', '.join(metadata.QUANTIZE_MODES)}")
    if fmt != "tflite" and quantize != "none":
        raise ValueError(f"--quantize {quantize} applies to tflite only (got --format {fmt})")
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    metadata.check_detector(model)
    window = metadata.check_window(model, seq_len)
    c = metadata.input_dim(model)
    final = _check_out(fmt, out, force)
    meta = _resolve_meta(video_meta, calibration)

    n_cal = INT8_WINDOWS if quantize == "int8" else verify_windows
    if quantize == "int8" and calibration is None:
        raise ValueError("--quantize int8 needs --calibration (a config or a folder of .npy files)")
    windows = calib.load_windows(calibration, c, window, max_windows=n_cal)
    check_windows = windows.take(verify_windows)

    parent = os.path.dirname(os.path.abspath(final))
    created = _make_dirs(parent)
    tmp = tempfile.mkdtemp(prefix=".asl-export-", dir=parent)
    ok = False
    try:
        name = os.path.basename(final)
        art = os.path.join(tmp, name)
        extra = {}
        if fmt == "saved_model":
            from export import saved_model as sm
            sm.save_serving(model, art)
            runner = sm.SavedModelRunner(art)
            make_runner = lambda n: runner  # noqa: E731  (TF picks its own thread pools)
            lat_threads = (threads[0],)
        elif fmt == "tflite":
            from export import tflite
            blob = tflite.convert(model, window, quantize, _int8_windows(windows)
                                  if quantize == "int8" else None)
            with open(art, "wb") as f:
                f.write(blob)
            extra["ops"] = tflite.op_counts(art)
            if quantize == "int8":
                extra["int8_float_ops"] = list(tflite.INT8_FLOAT_OPS)
            runner = tflite.TFLiteRunner(art, threads=1)
            make_runner = lambda n: tflite.TFLiteRunner(art, threads=n)  # noqa: E731
            lat_threads = threads
        else:
            from export import onnx as onnx_export
            extra["ops"] = onnx_export.convert(model, window, art)
            extra["opset"] = onnx_export.OPSET
            runner = onnx_export.OnnxRunner(art, threads=1)
            make_runner = lambda n: onnx_export.OnnxRunner(art, threads=n)  # noqa: E731
            lat_threads = threads
        sidecar = metadata.build_sidecar(model, window, quantize, meta)
        report = {"format": fmt, "quantize": quantize, "file": os.path.abspath(final),
                  "size_bytes": _size(art), "window": window, "input_dim": c, **extra}
        passed = True
        if verify:
            vmeta = _verify_meta(meta)
            v = compare(model, runner, check_windows, vmeta, quantize, limits)
            v.pop("_detections")
            report["verification"] = v
            passed = v["passed"]
            if fmt == "saved_model":
                d = compare_detect(model, runner, check_windows, vmeta)
                report["detect_verification"] = d
                passed = passed and d["passed"]
        report["latency_ms"] = median_latency_ms(
            make_runner, check_windows.feats[:1], check_windows.mask[:1], lat_threads, latency_runs)
        report["passed"] = passed
        print(format_table([report]))
        if not passed:
            why = "; ".join((report.get("verification") or {}).get("failures", [])
                            + (report.get("detect_verification") or {}).get("failures", []))
            raise VerificationError(f"export refused ({fmt}, quantize={quantize}): {why}; "
                                    "nothing was written", report)
        # === write: artifact, sidecar, report ===
        sidecar_dst = metadata.sidecar_path(final)
        if fmt == "saved_model":  # also inside the version folder, where TF Serving keeps extras
            os.makedirs(os.path.join(art, "assets.extra"), exist_ok=True)
            metadata.write_json_atomic(os.path.join(art, "assets.extra", "asl_meta.json"), sidecar)
        if os.path.lexists(final):  # --force
            shutil.rmtree(final) if os.path.isdir(final) else os.remove(final)
        os.replace(art, final)
        metadata.write_json_atomic(sidecar_dst, sidecar)
        report_dir = os.fspath(out) if fmt == "saved_model" else parent
        report["report"] = os.path.join(report_dir, REPORT_NAME)
        _write_report(report["report"], os.path.relpath(final, report_dir), report)
        logging.info("exported %s (%s, %d bytes) to %s", fmt, quantize, report["size_bytes"], final)
        ok = True
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            for d in created:  # innermost first; only folders this call made and left empty
                try:
                    os.rmdir(d)
                except OSError:
                    break



#: Frames per calibration video for an encoder export (half calibrate int8, half verify).
ENCODER_FRAMES_PER_VIDEO = 48


def format_encoder_table(rows):
    """Plain-text table of encoder export reports (one row per export)."""
    head = ("format", "quantize", "size MB", "frames", "max|diff|", "mean cos", "min cos",
            "top-1 agree", "ms/frame@1t", "ms/frame@2t", "ok")
    lines = [" | ".join(head)]
    for r in rows:
        v, lat = r.get("verification") or {}, r.get("latency_ms") or {}
        lines.append(" | ".join([
            r["format"], r["quantize"], f"{r['size_bytes'] / 1e6:.3f}", _fmt(v.get("frames"), "d"),
            _fmt(v.get("max_diff"), ".2e"), _fmt(v.get("mean_cosine"), ".4f"),
            _fmt(v.get("min_cosine"), ".4f"), _fmt(v.get("top1_agreement"), ".3f"),
            _fmt(lat.get("1"), ".1f"), _fmt(lat.get("2"), ".1f"),
            "yes" if r.get("passed", True) else "NO"]))
    return "\n".join(lines)


def _encoder_frames(calibration, quantize, size):
    """(calibration frames, verification frames) uint8 [N, size, size, 3]."""
    from export import encoder_frames
    if calibration is None:
        if quantize != "none":
            raise ValueError(f"--quantize {quantize} of an encoder needs --calibration (a video "
                             f"file, a folder of videos, or a comma-separated list)")
        rng = np.random.default_rng(0)  # fp32 is checked element-wise: any pixels will do
        return None, rng.integers(0, 256, (8, size, size, 3), dtype=np.uint8), "synthetic"
    frames = encoder_frames.load_frames(calibration, size, ENCODER_FRAMES_PER_VIDEO)
    if len(frames) < 2:
        raise ValueError(f"--calibration {calibration}: needs at least 2 frames, got {len(frames)}")
    cal, held = encoder_frames.split(frames)
    return cal.rgb, held.rgb, frames.source


def _frames_only(runner):
    return lambda rgb, _mask: runner(rgb)


def export_encoder(name, fmt, out, *, quantize="none", calibration=None, force=False,
                   verify=True, limits=None, include_top=False, weights=None, threads=(1, 2),
                   latency_runs=5):
    """Export the frame encoder `name` (efficientnet_lite0) as `fmt` (tflite | onnx) to `out`.

    quantize (tflite): none | dynamic | int8. calibration: a video file, a folder of videos or
    a comma-separated list; its frames are split in two, half calibrate int8 and half (held
    out) verify. fp32 must match Keras within 1e-4; dynamic/int8 must reach the mean cosine
    and top-1 agreement of `export.encoder.QUANT_LIMITS` (overridable by `limits`). Nothing is
    written when verification fails (VerificationError). Returns the report dict.
    """
    from export import encoder as enc
    if fmt not in ("tflite", "onnx"):
        raise ValueError(f"--format {fmt!r}: an encoder exports to tflite or onnx")
    if quantize not in ("none", "dynamic", "int8"):
        raise ValueError(f"--quantize {quantize!r}: an encoder exports none, dynamic or int8")
    if fmt != "tflite" and quantize != "none":
        raise ValueError(f"--quantize {quantize} applies to tflite only (got --format {fmt})")
    final = _check_out(fmt, out, force)
    from asl_tf.features import default_weights_path, efficientnet_lite
    cal, check, source = _encoder_frames(calibration, quantize, efficientnet_lite.INPUT_SIZE)
    model = enc.build(name, include_top, weights)
    weights_path = default_weights_path() if weights is None else os.fspath(weights)
    parent = os.path.dirname(os.path.abspath(final))
    created = _make_dirs(parent)
    tmp = tempfile.mkdtemp(prefix=".asl-export-", dir=parent)
    ok = False
    try:
        art = os.path.join(tmp, os.path.basename(final))
        extra = {}
        if fmt == "tflite":
            with open(art, "wb") as f:
                f.write(enc.convert_tflite(model, quantize, cal))
            from export import tflite
            extra["ops"] = tflite.op_counts(art)
            make_runner = lambda n: enc.TFLiteEncoder(art, threads=n)  # noqa: E731
        else:
            extra["ops"] = enc.convert_onnx(model, art)
            extra["opset"] = enc.ONNX_OPSET
            make_runner = lambda n: enc.OnnxEncoder(art, threads=n)  # noqa: E731
        report = {"format": fmt, "quantize": quantize, "encoder": name,
                  "file": os.path.abspath(final), "size_bytes": _size(art),
                  "calibration": source, **extra}
        passed = True
        if verify:
            v = enc.compare(model, make_runner(1), check, quantize, limits,
                            classifier=None if include_top else enc.classifier(weights))
            report["verification"], passed = v, v["passed"]
        report["latency_ms"] = median_latency_ms(  # one frame per call; the runners take no mask
            lambda n: _frames_only(make_runner(n)), check[:1].astype(np.float32), None, threads,
            latency_runs)
        report["passed"] = passed
        print(format_encoder_table([report]))
        if not passed:
            why = "; ".join(report["verification"]["failures"])
            raise VerificationError(f"export refused ({name} {fmt}, quantize={quantize}): {why}; "
                                    "nothing was written", report)
        if os.path.lexists(final):  # --force
            os.remove(final)
        os.replace(art, final)
        metadata.write_json_atomic(metadata.sidecar_path(final),
                                   enc.sidecar(model, name, quantize, weights_path))
        report["report"] = os.path.join(parent, REPORT_NAME)
        _write_report(report["report"], os.path.relpath(final, parent), report)
        logging.info("exported %s %s (%s) to %s", name, fmt, quantize, final)
        ok = True
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            for d in created:
                try:
                    os.rmdir(d)
                except OSError:
                    break
