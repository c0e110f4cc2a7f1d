"""WSGI entry point: ``gunicorn -c gunicorn.conf.py app.wsgi:app``.

Imported by each gunicorn worker after the fork (no ``--preload``), so every worker
loads its own model and the master never imports TensorFlow.
"""

from app import create_app

app = create_app()
