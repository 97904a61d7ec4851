"""SavedModel export (TF Serving layout `PATH/1/`) and the fixed-window graph the converters read.

Signatures of the serving SavedModel:
- `serving_default(feats [B, T, C] float32, mask [B, T] bool) -> {cls_logits [B, ΣT_l, K],
  offsets [B, ΣT_l, 2]}`, T dynamic (the caller pads to a valid length, INTERFACES.md §2);
- `detect(feats [T, C], fps, feat_stride, num_frames, duration) -> {segments [N, 2] seconds,
  scores [N], labels [N] int32}`: one unpadded video, padding + decode + NMS in the graph.
"""
import tensorflow as tf

from export import detect_graph
from export.metadata import input_dim as model_input_dim


class _Exported(tf.Module):
    """Holds the Keras model so its variables are tracked and saved (not a concrete-function
    conversion, which TOOLCHAIN.md shows writes broken files)."""

    def __init__(self, model):
        super().__init__(name="asl_detector")
        self.model = model
        # Track the underlying tf.Variables explicitly: without this the TFLite converter cannot
        # freeze Keras 3 variables and writes VAR_HANDLE/READ_VARIABLE ops that fail at run time.
        self.tf_variables = [getattr(v, "value", v) for v in model.variables]


def raw_function(model, batch=None, window=None):
    """tf.function(feats [batch, window, C], mask [batch, window]) -> {cls_logits, offsets}."""
    c = model_input_dim(model)

    @tf.function(input_signature=[tf.TensorSpec([batch, window, c], tf.float32, name="feats"),
                                  tf.TensorSpec([batch, window], tf.bool, name="mask")])
    def serve(feats, mask):
        out = model({"feats": feats, "mask": mask}, training=False)
        return {"cls_logits": tf.identity(out["cls_logits"], name="cls_logits"),
                "offsets": tf.identity(out["offsets"], name="offsets")}

    return serve


def save_fixed_window(model, directory, window):
    """A SavedModel with one `serving_default` at [1, window, C]: the TFLite converter's input."""
    module = _Exported(model)
    fn = raw_function(model, batch=1, window=window)
    tf.saved_model.save(module, directory, signatures={"serving_default": fn.get_concrete_function()})
    return directory


def save_serving(model, directory):
    """Write the serving SavedModel (dynamic B and T, plus `detect`) into `directory`."""
    module = _Exported(model)
    module.serve = raw_function(model)
    module.detect = detect_graph.make_detect_fn(model, model_input_dim(model))
    tf.saved_model.save(module, directory, signatures={
        "serving_default": module.serve.get_concrete_function(),
        "detect": module.detect.get_concrete_function()})
    return directory


class SavedModelRunner:
    """Run an exported SavedModel's `serving_default` on numpy inputs (feats [1,T,C], mask [1,T])."""

    def __init__(self, directory):
        self.loaded = tf.saved_model.load(directory)
        self.fn = self.loaded.signatures["serving_default"]

    def __call__(self, feats, mask):
        out = self.fn(feats=tf.constant(feats, tf.float32), mask=tf.constant(mask, tf.bool))
        return {k: v.numpy() for k, v in out.items()}

    def detect(self, feats, fps, feat_stride, num_frames, duration):
        out = self.loaded.signatures["detect"](
            feats=tf.constant(feats, tf.float32), fps=tf.constant(fps, tf.float32),
            feat_stride=tf.constant(feat_stride, tf.float32),
            num_frames=tf.constant(num_frames, tf.float32), duration=tf.constant(duration, tf.float32))
        return {k: v.numpy() for k, v in out.items()}
