"""The request log's fields, its request id, and the JSON line format (``LOG_FORMAT=json``).

One record per request (written by ``app.access_log``): time, request id, method, route,
status, duration, and when they apply the error code, the label, ``in_distribution`` and the
operating point, plus the model's sha256 prefix. Built only from these fields, never from a
file name, form field, upload byte, DICOM tag or the raw path (``route`` is the matched URL
rule, so a client cannot write free text into the log through it).

The request id comes from ``X-Request-ID`` when the client sends an id in hex (a UUID, or 8 to
64 hex digits and dashes: what proxies and client libraries generate, and too narrow to spell a
name, so a client cannot write free text into the log through it), else from App Engine's
``X-Cloud-Trace-Context`` (its trace id), else it is generated; it is echoed back in
``X-Request-ID``. In JSON each line is one object that Cloud Logging reads as structured:
``severity``, ``message``, ``time`` and, with ``GOOGLE_CLOUD_PROJECT`` set,
``logging.googleapis.com/trace`` to group a request's lines.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import uuid

from flask import g, request

TOKEN = re.compile(r"^[0-9a-fA-F][0-9a-fA-F-]{7,63}$")
TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/|$)")
RECORD_ATTR = "cxr_request"  # the LogRecord attribute that carries a request's fields


def request_id() -> str:
    """This request's id: the client's hex ``X-Request-ID``, App Engine's trace id, or a new one."""
    rid = g.get("cxr_request_id")
    if rid is None:
        given = request.headers.get("X-Request-ID", "").strip()
        trace = TRACE.match(request.headers.get("X-Cloud-Trace-Context", "").strip())
        if TOKEN.match(given):
            rid = given
        elif trace:
            rid = trace.group(1).lower()
        else:
            rid = uuid.uuid4().hex
        g.cxr_request_id = rid
    return rid


def route() -> str:
    """The matched URL rule (``/predict``), never the raw path a client typed; ``unmatched`` else."""
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def outcome_fields(items: list[dict], code: str | None) -> dict:
    """The answer's codes and flags: one image's label, a batch's counts, or the error code."""
    fields: dict = {}
    if code:
        fields["error"] = code
    images = [item for item in items if "error" not in item]
    if len(items) == 1 and images:
        item = images[0]
        fields.update(label=item["label"], in_distribution=item.get("in_distribution"),
                      operating_point=item.get("operating_point"))
    elif len(items) == 1:
        fields["error"] = items[0]["error"]["code"]
    elif items:
        fields["batch"] = {"files": len(items), "refused": len(items) - len(images),
                           "covid": sum(item["label"] == "Covid" for item in images),
                           "out_of_distribution": sum(item.get("in_distribution") is False for item in images)}
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a request's fields (``extra={RECORD_ATTR: ...}``) are merged in."""

    def __init__(self):
        super().__init__()
        self.project = os.environ.get("GOOGLE_CLOUD_PROJECT")

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, RECORD_ATTR, None)
        if fields:
            entry.update(fields)
            trace = TRACE.match(fields.get("_trace") or "")
            entry.pop("_trace", None)
            if trace and self.project:
                entry["logging.googleapis.com/trace"] = f"projects/{self.project}/traces/{trace.group(1).lower()}"
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
