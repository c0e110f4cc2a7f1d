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
    MPEG4HP41,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from app.errors import input_status
from cxr import dicom
from cxr.decode import accepted_formats, decode_image, sniff_format
from cxr.errors import InputError
from cxr.preprocessing import prepare_image_bytes

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
        expected = predictor.predict_upload(jpeg)
        for name, data in variants(gray, jpeg).items():
            np.testing.assert_array_equal(
                prepare_image_bytes(data, predictor.input_size).array,
                prepare_image_bytes(jpeg, predictor.input_size).array, err_msg=name)
            got = predictor.predict_upload(data)
            assert got.label == expected.label, name
            for cls, p in expected.probabilities.items():
                assert got.probabilities[cls] == pytest.approx(p, abs=1e-5), name


def test_no_pixel_data_is_422(sources):
    data = make_dicom(None)
    with pytest.raises(InputError) as info:
        decode_image(data)
    assert input_status(info.value) == 422
    assert "no pixel data" in str(info.value)


@pytest.mark.parametrize("syntax", [JPEG2000MCLossless, MPEG4HP41])
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
    ds = dicom.read_header(make_dicom(gray))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate"):
        assert keyword not in ds
    with pytest.raises(InputError) as info:
        decode_image(data)
    for secret in (PATIENT_NAME, "Doe", PATIENT_ID, "19700101", "20200401"):
        assert secret not in str(info.value)


def test_supported_syntaxes_listed():
    names = dicom.supported_transfer_syntaxes()
    assert "Explicit VR Little Endian" in names and RLELossless.name in names
    assert JPEGLSLossless.name in names and JPEG2000MCLossless.name not in names


# ---- the header speaks first -----------------------------------------------------------

def _code(data: bytes) -> tuple[str, str]:
    with pytest.raises(InputError) as info:
        decode_image(data)
    for secret in (PATIENT_NAME, "Doe", PATIENT_ID, "19700101", "20200401"):
        assert secret not in str(info.value)
    assert input_status(info.value) == 422, info.value
    return info.value.code, str(info.value)


@pytest.mark.parametrize("modality", ["CT", "MR", "US", "NM", "PT", "MG", "XA", "OT", "SR", "RTDOSE"])
def test_header_refuses_what_is_not_a_radiograph(sources, modality):
    _, gray = sources[0]
    code, message = _code(make_dicom(gray, Modality=modality))
    assert code == "not_a_chest_xray" and f"Modality is {modality}" in message


@pytest.mark.parametrize("body_part", ["HEAD", "CSPINE", "ABDOMEN", "CHESTABDOMEN", "KNEE"])
def test_header_refuses_other_body_parts(sources, body_part):
    _, gray = sources[0]
    code, message = _code(make_dicom(gray, Modality="CR", BodyPartExamined=body_part))
    assert code == "not_a_chest_xray" and body_part in message


@pytest.mark.parametrize("view", ["LL", "RL", "LATERAL"])
def test_header_refuses_lateral_views(sources, view):
    _, gray = sources[0]
    code, message = _code(make_dicom(gray, BodyPartExamined="CHEST", ViewPosition=view))
    assert code == "lateral_view" and view in message


def test_view_code_sequence_speaks_when_view_position_is_absent(sources):
    _, gray = sources[0]
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "399173006", "SCT", "left lateral"
    code, message = _code(make_dicom(gray, ViewCodeSequence=[item]))
    assert code == "lateral_view" and "left lateral" in message
    item.CodeMeaning = "postero-anterior"
    assert decode_image(make_dicom(gray, ViewCodeSequence=[item])).shape == gray.shape


@pytest.mark.parametrize("tags", [
    {"Modality": "CR", "BodyPartExamined": "CHEST", "ViewPosition": "PA"},
    {"Modality": "DX", "BodyPartExamined": "PORTABLE CHEST", "ViewPosition": "AP"},
    {"Modality": "RG", "BodyPartExamined": "THORAX", "ViewPosition": "RLD"},  # decubitus: frontal beam
    {"Modality": "DX", "BodyPartExamined": ""},
])
def test_header_lets_frontal_chest_radiographs_through(sources, tags):
    _, gray = sources[0]
    np.testing.assert_array_equal(decode_image(make_dicom(gray, **tags)), gray)


def test_header_speaks_before_any_pixel_work(sources):
    """A CT is refused as a CT even when its syntax has no decoder or its pixels are garbage."""
    _, gray = sources[0]
    for syntax, frame in ((MPEG4HP41, b"\0\0\0\1"), (JPEGBaseline8Bit, b"\xff\xd8garbage")):
        data = make_dicom(gray, Modality="CT", transfer_syntax=syntax, encapsulated=frame)
        assert _code(data)[0] == "not_a_chest_xray"
    assert _code(make_dicom(None, Modality="SR"))[0] == "not_a_chest_xray"


def test_new_codes_map_to_422():
    from cxr.errors import LateralView, NotAChestXray

    assert input_status(NotAChestXray("x")) == 422 and NotAChestXray.code == "not_a_chest_xray"
    assert input_status(LateralView("x")) == 422 and LateralView.code == "lateral_view"


# ---- tolerant reading: bare datasets (no preamble, no file meta) ---------------------------

def bare(data: bytes, implicit: bool = False, little: bool = True) -> bytes:
    """The same dataset written without the 128-byte preamble and the file meta group."""
    from pydicom.filewriter import dcmwrite

    plain = Dataset()
    plain.update(pydicom.dcmread(io.BytesIO(data)))
    buffer = io.BytesIO()
    dcmwrite(buffer, plain, implicit_vr=implicit, little_endian=little)
    assert buffer.getvalue()[128:132] != b"DICM"
    return buffer.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_bare_dataset_is_read(sources, syntax):
    _, gray = sources[0]
    data = make_dicom(gray.astype(np.uint16) * 257, transfer_syntax=syntax)
    plain = bare(data, implicit=syntax.is_implicit_VR, little=syntax.is_little_endian)
    assert sniff_format(plain) == "DICOM"
    np.testing.assert_array_equal(decode_image(plain), gray)
    assert _code(bare(make_dicom(gray, Modality="MR")))[0] == "not_a_chest_xray"


def test_meta_without_transfer_syntax_is_read(sources):
    _, gray = sources[0]
    ds = pydicom.dcmread(io.BytesIO(make_dicom(gray)))
    del ds.file_meta.TransferSyntaxUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False, implicit_vr=False, little_endian=True)
    np.testing.assert_array_equal(decode_image(buffer.getvalue()), gray)


def test_random_bytes_and_lookalikes_stay_not_an_image():
    rng = np.random.default_rng(15)
    for _ in range(200):
        data = rng.integers(0, 256, int(rng.integers(1, 4000)), dtype=np.uint8).tobytes()
        with pytest.raises(InputError) as info:
            decode_image(data)
        assert info.value.code in ("not_an_image", "unsupported_media_type"), info.value
    # Bytes that pass the cheap look (group 0008, a real VR) but are no dataset.
    for tail in (b"", b"garbage" * 50, rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()):
        for head in (b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100", b"\x08\x00\x16\x00\x1c\x00\x00\x00"):
            assert dicom.looks_like_dataset(head + tail) or len(head + tail) < 16
            with pytest.raises(InputError) as info:
                decode_image(head + tail)
            assert info.value.code == "not_an_image", (head, info.value)


# ---- bombs: refused before anything large is allocated ------------------------------------

def test_deflate_bomb_is_refused_before_inflating(sources, monkeypatch):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    _, gray = sources[0]
    deflated = pydicom.dcmread(io.BytesIO(make_dicom(gray)))
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    deflated.save_as(buffer, enforce_file_format=True)
    np.testing.assert_array_equal(decode_image(buffer.getvalue()), gray)
    monkeypatch.setattr(dicom, "MAX_INFLATED_BYTES", gray.size // 2)
    with pytest.raises(InputError) as info:
        decode_image(buffer.getvalue())
    assert info.value.code == "image_too_large" and input_status(info.value) == 413


def test_frame_claiming_another_size_is_refused_before_decoding(sources):
    """A few bytes of JPEG 2000 or JPEG claiming 60000x60000 pixels never reach a decoder."""
    _, gray = sources[0]
    j2k = io.BytesIO()
    Image.fromarray(gray).save(j2k, "JPEG2000", irreversible=False, no_jp2=True)
    codestream = bytearray(j2k.getvalue())
    siz = codestream.find(b"\xff\x51")
    codestream[siz + 6:siz + 14] = (60000).to_bytes(4, "big") * 2  # Xsiz, Ysiz
    data = make_dicom(gray, transfer_syntax=JPEG2000Lossless, encapsulated=bytes(codestream))
    code, message = _code(data)
    assert code == "undecodable_image" and "60000x60000" in message
    jpeg = bytearray(sources[0][0])
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2
    code, message = _code(make_dicom(gray, transfer_syntax=JPEGBaseline8Bit, encapsulated=bytes(jpeg)))
    assert code == "undecodable_image" and "60000x60000" in message
