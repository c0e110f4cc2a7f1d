"""``POST /predict?explain=true`` and DICOM uploads through the real app (tiny real model)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.test_dicom import PATIENT_ID, PATIENT_NAME, make_dicom


def _png(path, size) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("L").resize(size, Image.Resampling.BILINEAR).save(buf, "PNG")
    return buf.getvalue()


def _decode_heatmap(body: dict) -> Image.Image:
    png = base64.b64decode(body["heatmap_png"], validate=True)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.verify()
    return Image.open(io.BytesIO(png))


@pytest.mark.parametrize("size, expected", [((900, 600), (512, 341)), ((300, 420), (300, 420))])
def test_explain_returns_a_png_overlay_with_the_upload_aspect(client, sample_xrays, size, expected):
    data = _png(sample_xrays["covid"][1], size)
    plain = client.post("/predict", data=data, content_type="image/png")
    explained = client.post("/predict?explain=true", data=data, content_type="image/png")
    assert plain.status_code == explained.status_code == 200
    plain, body = plain.get_json(), explained.get_json()
    assert "heatmap_png" not in plain and "explained_class" not in plain
    image = _decode_heatmap(body)
    assert image.format == "PNG" and image.mode == "RGB" and image.size == expected
    assert body["label"] == plain["label"] and body["explained_class"] == body["label"]
    for name, p in plain["probabilities"].items():
        assert body["probabilities"][name] == pytest.approx(p, abs=1e-5)
    assert body["model"] == plain["model"] and "not a diagnosis" in body["disclaimer"]


def test_explain_flag_values_and_requested_class(client, sample_xrays):
    data = sample_xrays["normal"][0].read_bytes()
    off = client.post("/predict?explain=false", data=data, content_type="image/jpeg")
    assert off.status_code == 200 and "heatmap_png" not in off.get_json()
    multipart = client.post("/predict?explain=1&class=Covid",
                            data={"file": (io.BytesIO(data), "x.jpg")}, content_type="multipart/form-data")
    assert multipart.status_code == 200
    assert multipart.get_json()["explained_class"] == "Covid"
    assert _decode_heatmap(multipart.get_json()).size == (224, 224)
    for query in ("explain=maybe", "explain=true&class=Pneumonia"):
        bad = client.post(f"/predict?{query}", data=data, content_type="image/jpeg")
        assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_request"


def test_explain_input_errors_are_json(client):
    response = client.post("/predict?explain=true", data=b"just text", content_type="image/png")
    assert response.status_code == 422 and "error" in response.get_json()


def test_dicom_through_the_api_matches_the_jpeg(client, sample_xrays):
    jpeg = sample_xrays["covid"][2].read_bytes()
    from cxr.decode import decode_image

    gray = decode_image(jpeg)
    dicom = make_dicom((255 - gray.astype(np.uint16)) * 257, photometric="MONOCHROME1",
                       WindowCenter=32767.5, WindowWidth=65536)
    want = client.post("/predict", data=jpeg, content_type="image/jpeg").get_json()
    for query in ("", "?explain=true"):
        response = client.post("/predict" + query, data={"file": (io.BytesIO(dicom), "chest.dcm")},
                               content_type="multipart/form-data")
        assert response.status_code == 200, response.get_data(as_text=True)
        got = response.get_json()
        assert got["label"] == want["label"]
        assert got["probabilities"]["Covid"] == pytest.approx(want["probabilities"]["Covid"], abs=1e-5)
        # the base64 heatmap is image data, where any short string can turn up by chance
        text = json.dumps({k: v for k, v in got.items() if k != "heatmap_png"})
        for secret in (PATIENT_NAME, "Doe", PATIENT_ID, "19700101"):
            assert secret not in text  # nothing from the DICOM header is echoed


def test_dicom_errors_through_the_api(client, sample_xrays):
    from pydicom.uid import MPEG4HP41

    from cxr.decode import decode_image

    gray = decode_image(sample_xrays["covid"][0].read_bytes())
    no_pixels = client.post("/predict", data=make_dicom(None), content_type="application/dicom")
    assert no_pixels.status_code == 422
    compressed = client.post("/predict?explain=true", content_type="application/dicom",
                             data=make_dicom(gray, transfer_syntax=MPEG4HP41,
                                             encapsulated=b"\x00\x00\x00\x01"))
    assert compressed.status_code == 415
    assert "MPEG-4" in compressed.get_json()["error"]["message"]
