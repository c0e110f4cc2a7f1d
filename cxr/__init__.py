"""The core both sides use: reading an upload, the one preprocessing, the model's facts,
loading a predictor, Grad-CAM, and whether an ONNX export is current.

Doors go one way: ``app/`` (the web service) and ``model_training/`` (training, evaluation,
the exporter) import this package; it imports neither, nor Flask, nor tf2onnx
(``.importlinter``; ``tests/test_architecture.py``). TensorFlow/Keras are imported only
inside the TensorFlow backend's loader (``cxr.inference``).

Modules, lowest first: ``errors`` and ``metadata``; ``images`` (PNG/JPEG) and ``dicom``;
``decode`` (the dispatcher over both); ``preprocessing``; ``onnx_status``; ``gradcam``
and ``inference``.
"""
