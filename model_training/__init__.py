"""Training-side tools: the data pipelines, the network, the training and evaluation CLIs,
the Grad-CAM CLI and report grid, the folder-scoring CLI (``predict``) and the ONNX exporter
(tf2onnx).

Everything the web app also needs (decoding, the one preprocessing, the model's metadata,
predictors, Grad-CAM, the export's validity check) lives in the core package ``cxr``, which
this package imports; the web app (``app``) never imports this package.
"""

from .cli import quiet_tensorflow

# The CLI modules import Keras (so TensorFlow) at their top, before their main() runs: the
# package sets the log-level default first.
quiet_tensorflow()
