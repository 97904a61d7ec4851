"""The reference (PyTorch ActionFormer) parameter names of an `ASLDetector`.

Used by the checkpoint import (`actionformer.load_state_dict`) and the gradient parity
(`actionformer_train.gradients`); a module of its own so neither imports the other.
"""


def torch_name_map(model):
    """{torch_name: (keras_variable, to_torch, from_torch)} for every reference parameter.

    `to_torch(np.ndarray)` converts a Keras value (or gradient) to the reference layout;
    `from_torch` converts a reference tensor to the Keras layout. Non-persistent reference
    buffers (pos_embd, points) are not parameters and are not listed.
    """
    out = {}
    for layer in (model.backbone, model.neck, model.cls_head, model.reg_head):
        out.update(layer.torch_params())
    return out
