"""DICOM uploads: files built here with pydicom from real X-rays must give the very same
model input (and so the same prediction) as the JPEG they were made from."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.uid import (  # noqa: E402
    DigitalXRayImageStorageForPresentation,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from app.errors import input_status
from cxr import dicom
from cxr.decode import accepted_formats, decode_image, sniff_format
from cxr.errors import InputError
from cxr.preprocessing import load_image_bytes

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "SECRET-4711"


def make_dicom(
    stored: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    transfer_syntax=ExplicitVRLittleEndian,
    encapsulated: bytes | None = None,
    **elements,
) -> bytes:
    """A DX 'for presentation' Part 10 file with patient tags we must never echo."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20200401"
    ds.Modality = "DX"
    if stored is not None:
        ds.Rows, ds.Columns = stored.shape[:2]
        ds.SamplesPerPixel = 3 if stored.ndim == 3 else 1
        if stored.ndim == 3:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = stored.dtype.itemsize * 8
        ds.BitsStored = bits_stored or ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        if encapsulated is not None:
            ds.PixelData = encapsulate([encapsulated])
            ds["PixelData"].VR = "OB"
        else:
            big = transfer_syntax == ExplicitVRBigEndian
            ds.PixelData = stored.astype(stored.dtype.newbyteorder(">" if big else "<")).tobytes()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def sources(sample_xrays):
    """(jpeg bytes, decoded gray) for one real Covid and one real Normal X-ray."""
    out = []
    for path in (sample_xrays["covid"][0], sample_xrays["normal"][0]):
        data = path.read_bytes()
        out.append((data, decode_image(data)))
    return out


def _voi_lut_12bit_item():
    """A 12-bit VOI LUT (the kind pydicom 3.0.2's apply_voi_lut mis-scales) undoing g*16."""
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    table = np.rint((np.arange(4096) // 16) * 4095 / 255).astype("<u2")
    item.add_new("LUTData", "OW", table.tobytes())
    return item


def variants(gray: np.ndarray, jpeg: bytes) -> dict[str, bytes]:
    """Every DICOM encoding of ``gray`` that must decode back to exactly ``gray``."""
    g16 = gray.astype(np.uint16)
    rgb = np.stack([gray] * 3, axis=-1)
    j2k = io.BytesIO()
    Image.fromarray(gray).save(j2k, "JPEG2000", irreversible=False, no_jp2=True)
    voi_lut = Dataset()
    voi_lut.VOILUTSequence = [_voi_lut_12bit_item()]
    return {
        "8bit-mono2": make_dicom(gray),
        "8bit-mono1": make_dicom(255 - gray, photometric="MONOCHROME1"),
        "8bit-implicit-vr": make_dicom(gray, transfer_syntax=ImplicitVRLittleEndian),
        "16bit-mono2": make_dicom(g16 * 257),
        "16bit-big-endian": make_dicom(g16 * 257, transfer_syntax=ExplicitVRBigEndian),
        "12bit-mono1": make_dicom(
            (4095 - np.rint(gray * (4095 / 255))).astype(np.uint16),
            photometric="MONOCHROME1", bits_stored=12),
        "16bit-mono2-window": make_dicom(
            g16 * 16 + 1000, WindowCenter=3040.5, WindowWidth=4081),
        "16bit-mono2-rescale-window": make_dicom(
            g16 * 8 + 1000, RescaleSlope=2, RescaleIntercept=-1000,
            WindowCenter=[3040.5, 100], WindowWidth=[4081, 50]),
        "16bit-mono1-window": make_dicom(
            (255 - g16) * 16 + 1000, photometric="MONOCHROME1",
            WindowCenter=3040.5, WindowWidth=4081),
        "16bit-mono2-window-linear-exact": make_dicom(
            g16 * 16 + 1000, WindowCenter=3040.0, WindowWidth=4080, VOILUTFunction="LINEAR_EXACT"),
        "12bit-mono2-voi-lut": make_dicom(
            g16 * 16, bits_stored=12, VOILUTSequence=voi_lut.VOILUTSequence),
        "8bit-rgb": make_dicom(rgb, photometric="RGB"),
        "jpeg-baseline": make_dicom(gray, transfer_syntax=JPEGBaseline8Bit, encapsulated=jpeg),
        "jpeg2000-lossless": make_dicom(
            gray, transfer_syntax=JPEG2000Lossless, encapsulated=j2k.getvalue()),
        "rle-lossless": _rle(gray),
    }


def _rle(gray: np.ndarray) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(gray)))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_is_sniffed_and_accepted(sources):
    jpeg, gray = sources[0]
    data = make_dicom(gray)
    assert sniff_format(data) == "DICOM"
    assert "DICOM" in accepted_formats()
    assert sniff_format(b"\0" * 128 + b"DICX") is None


def test_every_variant_decodes_to_the_source_pixels(sources):
    for jpeg, gray in sources:
        for name, data in variants(gray, jpeg).items():
            decoded = decode_image(data)
            assert decoded.dtype == np.uint8 and decoded.shape == gray.shape, name
            np.testing.assert_array_equal(decoded, gray, err_msg=name)


def test_window_really_changes_the_image(sources):
    """A narrow window must not be ignored: it clips, so the result differs from the source."""
    _, gray = sources[0]
    data = make_dicom(gray.astype(np.uint16) * 16 + 1000, WindowCenter=3040.5, WindowWidth=1000)
    windowed = decode_image(data)
    assert not np.array_equal(windowed, gray)
    assert (windowed == 0).mean() > (gray == 0).mean()


def test_same_prediction_as_the_source(tiny_model, sources):
    from cxr.inference import load_predictor

    predictor = load_predictor(tiny_model)
    for jpeg, gray in sources:
        expected = predictor.predict_bytes(jpeg)
        for name, data in variants(gray, jpeg).items():
            np.testing.assert_array_equal(
                load_image_bytes(data, predictor.input_size),
                load_image_bytes(jpeg, predictor.input_size), err_msg=name)
            got = predictor.predict_bytes(data)
            assert got.label == expected.label, name
            for cls, p in expected.probabilities.items():
                assert got.probabilities[cls] == pytest.approx(p, abs=1e-5), name


def test_no_pixel_data_is_422(sources):
    data = make_dicom(None)
    with pytest.raises(InputError) as info:
        decode_image(data)
    assert input_status(info.value) == 422
    assert "no pixel data" in str(info.value)


@pytest.mark.parametrize("syntax", [JPEGLosslessSV1, JPEGLSLossless])
def test_compressed_syntax_without_codec_is_415_naming_it(sources, syntax):
    _, gray = sources[0]
    data = make_dicom(gray, transfer_syntax=syntax, encapsulated=b"\xff\xd8\xff\xd9")
    with pytest.raises(InputError) as info:
        decode_image(data)
    assert input_status(info.value) == 415
    assert str(syntax) in str(info.value) and syntax.name in str(info.value)


def test_damaged_pixel_data_is_422(sources):
    _, gray = sources[0]
    data = make_dicom(gray, transfer_syntax=JPEGBaseline8Bit, encapsulated=b"\xff\xd8garbage")
    with pytest.raises(InputError) as info:
        decode_image(data)
    assert input_status(info.value) == 422
    # A JPEG whose scan holds an invalid marker decodes "fine" to a half-gray image in
    # libjpeg; like a JPEG upload, the DICOM frame is refused instead.
    jpeg = bytearray(sources[0][0])
    middle = len(jpeg) // 2
    jpeg[middle:middle + 2] = b"\xff\xd3"
    data = make_dicom(gray, transfer_syntax=JPEGBaseline8Bit, encapsulated=bytes(jpeg))
    with pytest.raises(InputError) as info:
        decode_image(data)
    assert input_status(info.value) == 422 and "corrupt" in str(info.value)
    truncated = make_dicom(gray)[:200]
    with pytest.raises(InputError) as info:
        decode_image(truncated)
    assert input_status(info.value) == 422


def test_too_small_dicom_is_422():
    with pytest.raises(InputError) as info:
        decode_image(make_dicom(np.zeros((16, 16), np.uint8)))
    assert input_status(info.value) == 422 and info.value.code == "image_too_small"


def test_patient_tags_are_never_read(sources):
    """Only image tags are parsed, so nothing identifying can reach a response or a log."""
    _, gray = sources[0]
    data = make_dicom(gray, transfer_syntax=JPEGLSLossless, encapsulated=b"\xff\xd8\xff\xd9")
    ds = dicom._read(make_dicom(gray))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate"):
        assert keyword not in ds
    with pytest.raises(InputError) as info:
        decode_image(data)
    for secret in (PATIENT_NAME, "Doe", PATIENT_ID, "19700101", "20200401"):
        assert secret not in str(info.value)


def test_supported_syntaxes_listed():
    names = dicom.supported_transfer_syntaxes()
    assert "Explicit VR Little Endian" in names and RLELossless.name in names
