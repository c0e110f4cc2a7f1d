"""Training-side tools: the data pipelines, the network, the training and evaluation CLIs,
the Grad-CAM CLI and report grid, the folder-scoring CLI (``predict``) and the ONNX exporter
(tf2onnx).

Everything the web app also needs (decoding, the one preprocessing, the model's metadata,
predictors, Grad-CAM, the export's validity check) lives in the core package ``cxr``, which
this package imports; the web app (``app``) never imports this package.
"""
