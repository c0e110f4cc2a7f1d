"""Issue 15: the DICOM files hospitals send, through ``POST /predict``.

Two tables:

* **Conformance**: every file pydicom 3.0.2 ships in its wheel (``pydicom/data``:
  ``test_files/`` with ``dicomdirtests/``, ``charset_files/``, ``palettes/``; the files it
  downloads on demand are not here and not needed) with the status and error code ``/predict``
  answers, and, header rules aside, what the decoders make of its pixels. No 5xx, none
  skipped: the table must list exactly the files shipped.
* **Syntaxes**: one real chest X-ray from the test split, written as a 12-bit CR DICOM
  (Modality CR, Body Part CHEST, View PA) in each transfer syntax a PACS exports, built here
  with the decoders' own encoders (pydicom + pylibjpeg-rle / pyjpegls / pylibjpeg-openjpeg)
  or GDCM. Each must answer 200 through ``/predict``; lossless ones must decode to the PNG's
  exact pixels, and the shipped model's P(Covid) must be within 0.05 of the PNG's (0.10 for
  lossy syntaxes).

``/predict`` runs the tiny model (``tiny_model``), which is fast but answers nearly the same
for every X-ray; the 0.05 / 0.10 comparison therefore uses the shipped model, whose answers
differ from image to image.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")
import pydicom.data  # noqa: E402, F811 (the submodule, on the module importorskip returned)
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.uid import (  # noqa: E402
    HTJ2K,
    JPEG2000,
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from cxr import dicom  # noqa: E402
from cxr.decode import decode_image  # noqa: E402
from cxr.dicom_codecs import plugins_for  # noqa: E402
from cxr.errors import InputError  # noqa: E402
from tests.xray_inputs import plain_png  # noqa: E402

DATA = Path(pydicom.data.__file__).parent
FOLDERS = ("test_files", "charset_files", "palettes")

C, U, N, S = "not_a_chest_xray", "undecodable_image", "not_an_image", "image_too_small"
OK = "decodes"

# (file under pydicom/data, /predict status, its error code, the pixels without header rules)
TABLE = [
    ("charset_files/FileInfo.txt", 422, N, N),  # not DICOM
    ("charset_files/chrArab.dcm", 422, C, OK),  # OT, explicit LE
    ("charset_files/chrFren.dcm", 422, C, OK),  # OT, explicit LE
    ("charset_files/chrFrenMulti.dcm", 422, C, OK),  # OT, explicit LE
    ("charset_files/chrGerm.dcm", 422, C, OK),  # OT, explicit LE
    ("charset_files/chrGreek.dcm", 422, C, OK),  # OT, explicit LE
    ("charset_files/chrH31.dcm", 422, C, OK),  # OT, explicit LE
    ("charset_files/chrH32.dcm", 422, C, OK),  # OT, explicit LE
    ("charset_files/chrHbrw.dcm", 422, C, OK),  # OT, explicit LE
    ("charset_files/chrI2.dcm", 422, C, OK),  # OT, explicit LE
    ("charset_files/chrJapMulti.dcm", 422, U, U),  # CR, explicit LE
    ("charset_files/chrJapMultiExplicitIR6.dcm", 422, U, U),  # CR, explicit LE
    ("charset_files/chrKoreanMulti.dcm", 422, U, U),  # CR, explicit LE
    ("charset_files/chrRuss.dcm", 422, C, OK),  # OT, explicit LE
    ("charset_files/chrSQEncoding.dcm", 422, U, U),  # no Modality, explicit LE
    ("charset_files/chrSQEncoding1.dcm", 422, U, U),  # no Modality, explicit LE
    ("charset_files/chrX1.dcm", 422, C, OK),  # OT, explicit LE
    ("charset_files/chrX2.dcm", 422, C, OK),  # OT, explicit LE
    ("palettes/README.md", 422, N, N),  # not DICOM
    ("palettes/fall.dcm", 422, U, U),  # no Modality, explicit LE
    ("palettes/hotiron.dcm", 422, U, U),  # no Modality, explicit LE
    ("palettes/hotmetalblue.dcm", 422, U, U),  # no Modality, explicit LE
    ("palettes/pet.dcm", 422, U, U),  # no Modality, explicit LE
    ("palettes/pet20step.dcm", 422, U, U),  # no Modality, explicit LE
    ("palettes/spring.dcm", 422, U, U),  # no Modality, explicit LE
    ("palettes/summer.dcm", 422, U, U),  # no Modality, explicit LE
    ("palettes/winter.dcm", 422, U, U),  # no Modality, explicit LE
    ("test_files/693_J2KI.dcm", 422, C, OK),  # CT, JPEG 2000
    ("test_files/CT_small.dcm", 422, C, OK),  # CT, explicit LE
    ("test_files/ExplVR_BigEnd.dcm", 422, C, OK),  # US, explicit BE
    # bare dataset (no preamble/meta) read tolerantly; RTPLAN
    ("test_files/ExplVR_BigEndNoMeta.dcm", 422, C, U),
    ("test_files/ExplVR_LitEndNoMeta.dcm", 422, C, U),  # bare dataset read tolerantly; RTPLAN
    # choice: no Modality, so the header is silent; a 400x400 text image is the content gate's to refuse
    ("test_files/GDCMJ2K_TextGBR.dcm", 200, None, OK),
    ("test_files/J2K_pixelrep_mismatch.dcm", 422, C, OK),  # CT, JPEG 2000  (Lossless Only)
    ("test_files/JPEG-lossy.dcm", 422, C, OK),  # NM; 12-bit JPEG Extended, decoded by gdcm-12bit
    # NM; its frame claims 3722445056 columns: refused before decoding
    ("test_files/JPEG2000-embedded-sequence-delimiter.dcm", 422, C, U),
    ("test_files/JPEG2000.dcm", 422, C, OK),  # NM, JPEG 2000
    # no Modality, JPEG-LS Lossy (Near-Lossless)
    ("test_files/JPEGLSNearLossless_08.dcm", 422, S, S),
    # no Modality, JPEG-LS Lossy (Near-Lossless)
    ("test_files/JPEGLSNearLossless_16.dcm", 422, S, S),
    ("test_files/JPGExtended.dcm", 422, C, OK),  # NM; 12-bit JPEG Extended, decoded by gdcm-12bit
    ("test_files/MR_small.dcm", 422, C, OK),  # MR, explicit LE
    ("test_files/MR_small_RLE.dcm", 422, C, OK),  # MR, RLE Lossless
    ("test_files/MR_small_bigendian.dcm", 422, C, OK),  # MR, explicit BE
    ("test_files/MR_small_expb.dcm", 422, C, OK),  # MR, explicit BE
    ("test_files/MR_small_implicit.dcm", 422, C, OK),  # MR, implicit LE
    ("test_files/MR_small_jp2klossless.dcm", 422, C, OK),  # MR, JPEG 2000  (Lossless Only)
    ("test_files/MR_small_jpeg_ls_lossless.dcm", 422, C, OK),  # MR, JPEG-LS Lossless
    ("test_files/MR_small_padded.dcm", 422, C, OK),  # MR, explicit LE
    # MR: header first; the truncated pixels would be 422 too
    ("test_files/MR_truncated.dcm", 422, C, U),
    ("test_files/README.txt", 422, N, N),  # not DICOM
    # choice: secondary capture without Modality: the header is silent
    ("test_files/SC_jpeg_no_color_transform.dcm", 200, None, OK),
    ("test_files/SC_jpeg_no_color_transform_2.dcm", 200, None, OK),  # choice: as above
    ("test_files/SC_rgb_dcmtk_+eb+cr.dcm", 422, C, OK),  # OT, JPEG Baseline
    ("test_files/SC_rgb_dcmtk_+eb+cy+n1.dcm", 422, C, OK),  # OT, JPEG Baseline
    ("test_files/SC_rgb_dcmtk_+eb+cy+n2.dcm", 422, C, OK),  # OT, JPEG Baseline
    ("test_files/SC_rgb_dcmtk_+eb+cy+np.dcm", 422, C, OK),  # OT, JPEG Baseline
    ("test_files/SC_rgb_dcmtk_+eb+cy+s2.dcm", 422, C, OK),  # OT, JPEG Baseline
    ("test_files/SC_rgb_dcmtk_+eb+cy+s4.dcm", 422, C, OK),  # OT, JPEG Baseline
    ("test_files/SC_rgb_gdcm_KY.dcm", 422, C, OK),  # OT, JPEG 2000
    # choice: as above (JPEG-LS near-lossless, RGB)
    ("test_files/SC_rgb_jls_lossy_line.dcm", 200, None, OK),
    # choice: as above (JPEG-LS near-lossless, RGB)
    ("test_files/SC_rgb_jls_lossy_sample.dcm", 200, None, OK),
    ("test_files/SC_rgb_jpeg.dcm", 422, C, OK),  # OT, JPEG Baseline
    # choice: as above (JPEG baseline, RGB)
    ("test_files/SC_rgb_jpeg_app14_dcmd.dcm", 200, None, OK),
    ("test_files/SC_rgb_jpeg_dcmd.dcm", 422, C, OK),  # OT, implicit LE
    ("test_files/SC_rgb_jpeg_dcmtk.dcm", 422, C, OK),  # OT, JPEG Baseline
    ("test_files/SC_rgb_jpeg_gdcm.dcm", 422, C, OK),  # OT; JPEG Lossless SV1, decoded by GDCM
    ("test_files/SC_rgb_jpeg_lossy_gdcm.dcm", 422, C, OK),  # OT, JPEG Baseline
    ("test_files/SC_rgb_rle.dcm", 422, C, OK),  # OT, RLE Lossless
    ("test_files/SC_rgb_rle_16bit.dcm", 422, C, OK),  # OT, RLE Lossless
    ("test_files/SC_rgb_rle_16bit_2frame.dcm", 422, C, OK),  # OT, RLE Lossless
    ("test_files/SC_rgb_rle_2frame.dcm", 422, C, OK),  # OT, RLE Lossless
    ("test_files/SC_rgb_rle_32bit.dcm", 422, C, OK),  # OT, RLE Lossless
    ("test_files/SC_rgb_rle_32bit_2frame.dcm", 422, C, OK),  # OT, RLE Lossless
    ("test_files/SC_rgb_small_odd.dcm", 422, C, S),  # OT, explicit LE
    ("test_files/SC_rgb_small_odd_big_endian.dcm", 422, C, S),  # OT, explicit BE
    ("test_files/SC_rgb_small_odd_jpeg.dcm", 422, C, S),  # OT, JPEG Baseline
    ("test_files/SC_ybr_full_422_uncompressed.dcm", 422, C, OK),  # OT, explicit LE
    ("test_files/UN_sequence.dcm", 422, U, U),  # no pixel data
    # RTDOSE with a bad VR elsewhere: only the tags we read matter
    ("test_files/badVR.dcm", 422, C, S),
    ("test_files/crayons.icc", 422, N, N),  # not DICOM
    # CR but Body Part CSPINE (and View LL): body part speaks first
    ("test_files/dicomdirtests/77654033/CR1/6154", 422, C, S),
    ("test_files/dicomdirtests/77654033/CR2/6247", 422, C, S),  # CR but Body Part CSPINE
    ("test_files/dicomdirtests/77654033/CR3/6278", 422, C, S),  # CR but Body Part CSPINE
    ("test_files/dicomdirtests/77654033/CT2/17106", 422, C, S),  # CT, explicit LE
    ("test_files/dicomdirtests/77654033/CT2/17136", 422, C, S),  # CT, explicit LE
    ("test_files/dicomdirtests/77654033/CT2/17166", 422, C, S),  # CT, explicit LE
    ("test_files/dicomdirtests/77654033/CT2/17196", 422, C, S),  # CT, explicit LE
    ("test_files/dicomdirtests/98892001/CT2N/6293", 422, C, S),  # CT, explicit LE
    ("test_files/dicomdirtests/98892001/CT2N/6924", 422, C, S),  # CT, explicit LE
    ("test_files/dicomdirtests/98892001/CT5N/2062", 422, C, S),  # CT, explicit LE
    ("test_files/dicomdirtests/98892001/CT5N/2392", 422, C, S),  # CT, explicit LE
    ("test_files/dicomdirtests/98892001/CT5N/2693", 422, C, S),  # CT, explicit LE
    ("test_files/dicomdirtests/98892001/CT5N/3023", 422, C, S),  # CT, explicit LE
    ("test_files/dicomdirtests/98892001/CT5N/3353", 422, C, S),  # CT, explicit LE
    ("test_files/dicomdirtests/98892003/MR1/15820", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR1/4919", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR1/5641", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR2/15970", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR2/4950", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR2/4981", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR2/5011", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR2/6273", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR2/6605", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR2/6935", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR700/4467", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR700/4528", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR700/4558", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR700/4588", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR700/4618", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR700/4648", 422, C, S),  # MR, explicit LE
    ("test_files/dicomdirtests/98892003/MR700/4678", 422, C, S),  # MR, explicit LE
    # choice: a media directory is DICOM without an image: undecodable_image, not not_an_image
    ("test_files/dicomdirtests/DICOMDIR", 422, U, U),
    ("test_files/dicomdirtests/DICOMDIR-bigEnd", 422, U, U),  # no Modality, explicit BE
    ("test_files/dicomdirtests/DICOMDIR-empty.dcm", 422, U, U),  # no Modality, explicit LE
    ("test_files/dicomdirtests/DICOMDIR-implicit", 422, U, U),  # no Modality, implicit LE
    ("test_files/dicomdirtests/DICOMDIR-nooffset", 422, U, U),  # no Modality, explicit LE
    ("test_files/dicomdirtests/DICOMDIR-nopatient", 422, U, U),  # no Modality, explicit LE
    ("test_files/dicomdirtests/DICOMDIR-reordered", 422, U, U),  # no Modality, explicit LE
    ("test_files/dicomdirtests/README.txt", 422, N, N),  # not DICOM
    ("test_files/dicomdirtests/TINY_ALPHA/DICOMDIR", 422, U, U),  # no Modality, explicit LE
    ("test_files/dicomdirtests/TINY_ALPHA/README", 422, N, N),  # not DICOM
    ("test_files/empty_charset_LEI.dcm", 422, U, U),  # no Modality, implicit LE
    ("test_files/examples_jpeg2k.dcm", 422, C, OK),  # US, JPEG 2000  (Lossless Only)
    ("test_files/examples_overlay.dcm", 422, C, OK),  # MR, explicit LE
    ("test_files/examples_palette.dcm", 422, C, OK),  # US, explicit LE
    ("test_files/examples_rgb_color.dcm", 422, C, OK),  # US, explicit LE
    ("test_files/examples_ybr_color.dcm", 422, C, OK),  # US, JPEG Baseline
    ("test_files/image_dfl.dcm", 422, C, OK),  # OT; deflated, inflated with a bound
    ("test_files/liver_1frame.dcm", 422, C, OK),  # SEG, explicit LE
    ("test_files/liver_expb_1frame.dcm", 422, C, OK),  # SEG, explicit BE
    # meta without syntax: inferred; pixel data but no Rows/Columns
    ("test_files/meta_missing_tsyntax.dcm", 422, U, U),
    ("test_files/nested_priv_SQ.dcm", 422, U, U),  # pixel data but no Rows/Columns
    # choice: a stray byte before the first element: not a dataset start
    ("test_files/no_meta.dcm", 422, N, N),
    ("test_files/no_meta_group_length.dcm", 422, U, U),  # no Modality, implicit LE
    ("test_files/priv_SQ.dcm", 422, U, U),  # no Modality, implicit LE
    ("test_files/reportsi.dcm", 422, C, U),  # SR, explicit LE
    ("test_files/reportsi_with_empty_number_tags.dcm", 422, C, U),  # SR, explicit LE
    ("test_files/rtdose.dcm", 422, C, S),  # RTDOSE, implicit LE
    ("test_files/rtdose_1frame.dcm", 422, C, S),  # RTDOSE, implicit LE
    ("test_files/rtdose_expb.dcm", 422, C, S),  # RTDOSE, explicit BE
    ("test_files/rtdose_expb_1frame.dcm", 422, C, S),  # RTDOSE, explicit BE
    ("test_files/rtdose_rle.dcm", 422, C, S),  # RTDOSE, RLE Lossless
    ("test_files/rtdose_rle_1frame.dcm", 422, C, S),  # RTDOSE, RLE Lossless
    ("test_files/rtplan.dcm", 422, C, U),  # RTPLAN, implicit LE
    ("test_files/rtplan.dump", 422, N, N),  # not DICOM
    ("test_files/rtplan_truncated.dcm", 422, C, U),  # RTPLAN, implicit LE
    ("test_files/rtstruct.dcm", 422, C, U),  # bare implicit-VR dataset read tolerantly; RTSTRUCT
    ("test_files/rtstruct.dump", 422, N, N),  # not DICOM
    ("test_files/test-SR.dcm", 422, C, U),  # SR, explicit LE
    ("test_files/test1.json", 422, N, N),  # not DICOM
    ("test_files/test_PN.json", 422, N, N),  # not DICOM
    ("test_files/waveform_ecg.dcm", 422, C, U),  # ECG, explicit LE
    ("test_files/zipMR.gz", 422, N, N),  # not DICOM
]
# 50 CT slices of a DICOMDIR test set, without pixel data.
TINY_ALPHA = "test_files/dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/"
TABLE += [(TINY_ALPHA + f"IM0000{n}", 422, C, U) for n in (
    "00 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F 0G 0H 0I 0J 0K 0L 0M 0N 0O 0P 0Q 0R 0S 0T "
    "0U 0V 0W 0X 0Y 0Z 10 11 12 13 14 15 16 17 18 19 1A 1B 1C 1D").split()]

#: The counts the README and the issue's closing note quote: (status, code) -> files.
COUNTS = {(200, None): 6, (422, C): 156, (422, U): 27, (422, N): 12, (422, S): 2}


def predict(client, data: bytes):
    return client.post("/predict", data={"file": (io.BytesIO(data), "upload.dcm")},
                       content_type="multipart/form-data")


def test_table_lists_exactly_the_bundled_files():
    shipped = {str(path.relative_to(DATA)) for folder in FOLDERS
               for path in (DATA / folder).rglob("*") if path.is_file()}
    listed = [row[0] for row in TABLE]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert set(listed) == shipped, (sorted(shipped - set(listed)), sorted(set(listed) - shipped))
    assert Counter((status, code) for _, status, code, _ in TABLE) == COUNTS


@pytest.mark.parametrize("name,status,code,pixels", TABLE, ids=[row[0] for row in TABLE])
def test_bundled_file(client, name, status, code, pixels):
    data = (DATA / name).read_bytes()
    response = predict(client, data)
    assert response.status_code < 500
    body = response.get_json()
    assert (response.status_code, body.get("error", {}).get("code")) == (status, code), body
    if status == 200:
        assert body["label"] in ("Covid", "Normal")
    try:
        dicom.decode_pixels(dicom.read_header(data))
        decoded = OK
    except InputError as exc:
        decoded = exc.code
    assert decoded == pixels


# ---- one CR chest X-ray in every syntax ----------------------------------------------------

def cr_dataset(gray: np.ndarray, bits: int = 12) -> Dataset:
    """A 12-bit (or 8-bit) CR chest PA whose stored values map back to ``gray`` exactly."""
    stored = np.rint(gray * ((2**bits - 1) / 255)).astype(np.uint16 if bits > 8 else np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = "Test^Synthetic", "NOT-A-PATIENT"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    return ds


def gdcm_encode(ds: Dataset, ts_type: int, quality: int | None = None) -> bytes:
    """One frame encoded by GDCM (JPEG lossless and 12-bit extended: pydicom has no encoder)."""
    import gdcm

    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((ds.Columns, ds.Rows, 1))
    image.SetPhotometricInterpretation(
        gdcm.PhotometricInterpretation(gdcm.PhotometricInterpretation.MONOCHROME2))
    image.SetPixelFormat(gdcm.PixelFormat(1, ds.BitsAllocated, ds.BitsStored, ds.HighBit, 0))
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.ExplicitVRLittleEndian))
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetByteStringValue(ds.PixelData)
    image.SetDataElement(element)
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(ts_type))
    codec = gdcm.JPEGCodec()
    if quality is not None:
        codec.SetLossless(False)
        codec.SetQuality(quality)
        change.SetUserCodec(codec)
    change.SetInput(image)
    image.thisown = False  # now held by GDCM's own reference count, freed with `change`
    assert change.Change(), "GDCM could not encode"
    fragments = change.GetOutput().GetDataElement().GetSequenceOfFragments()
    frames = []
    for i in range(fragments.GetNumberOfFragments()):
        value = fragments.GetFragment(i).GetByteValue()
        frames.append(value.GetBuffer().encode("utf-8", "surrogateescape"))
    return b"".join(frames)


def part10(ds: Dataset, syntax=None) -> bytes:
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def encapsulated(ds: Dataset, syntax, frame: bytes) -> bytes:
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return part10(ds, syntax)


def compressed(ds: Dataset, syntax, **options) -> bytes:
    ds.compress(syntax, **options)
    return part10(ds)


def big_endian(ds: Dataset) -> bytes:
    ds.PixelData = np.frombuffer(ds.PixelData, "<u2").astype(">u2").tobytes()
    return part10(ds, ExplicitVRBigEndian)


def bare(ds: Dataset, implicit: bool) -> bytes:
    """No preamble, no file meta: the dataset alone, as older archives hold it."""
    from pydicom.filewriter import dcmwrite

    plain = Dataset()
    plain.update(ds)
    buffer = io.BytesIO()
    dcmwrite(buffer, plain, implicit_vr=implicit, little_endian=True)
    assert buffer.getvalue()[128:132] != b"DICM"
    return buffer.getvalue()


def jpeg_baseline(gray: np.ndarray) -> bytes:
    frame = io.BytesIO()
    Image.fromarray(gray).save(frame, "JPEG", quality=95)
    return encapsulated(cr_dataset(gray, bits=8), JPEGBaseline8Bit, frame.getvalue())


def _gdcm(ts_name: str, quality=None):
    def build(gray):
        import gdcm

        ds = cr_dataset(gray)
        return encapsulated(ds, SYNTAX_UIDS[ts_name],
                            gdcm_encode(ds, getattr(gdcm.TransferSyntax, ts_name), quality))
    return build


SYNTAX_UIDS = {"JPEGLosslessProcess14": JPEGLossless, "JPEGLosslessProcess14_1": JPEGLosslessSV1,
               "JPEGExtendedProcess2_4": JPEGExtended12Bit}

# name -> (builder from the 8-bit gray, transfer syntax or None for bare, lossy?, first decoder)
SYNTAXES = {
    "explicit-vr-le": (lambda g: part10(cr_dataset(g)), ExplicitVRLittleEndian, False, ""),
    "implicit-vr-le": (lambda g: part10(cr_dataset(g), ImplicitVRLittleEndian),
                       ImplicitVRLittleEndian, False, ""),
    "explicit-vr-be": (lambda g: big_endian(cr_dataset(g)), ExplicitVRBigEndian, False, ""),
    "deflated": (lambda g: part10(cr_dataset(g), DeflatedExplicitVRLittleEndian),
                 DeflatedExplicitVRLittleEndian, False, ""),
    "bare-explicit-vr-le": (lambda g: bare(cr_dataset(g), implicit=False), None, False, ""),
    "bare-implicit-vr-le": (lambda g: bare(cr_dataset(g), implicit=True), None, False, ""),
    "rle-lossless": (lambda g: compressed(cr_dataset(g), RLELossless), RLELossless, False, "pylibjpeg"),
    "jpeg-lossless-process14": (_gdcm("JPEGLosslessProcess14"), JPEGLossless, False, "gdcm"),
    "jpeg-lossless-sv1": (_gdcm("JPEGLosslessProcess14_1"), JPEGLosslessSV1, False, "gdcm"),
    "jpeg-ls-lossless": (lambda g: compressed(cr_dataset(g), JPEGLSLossless), JPEGLSLossless, False,
                         "pyjpegls"),
    "jpeg-ls-near-lossless": (lambda g: compressed(cr_dataset(g), JPEGLSNearLossless, jls_error=8),
                              JPEGLSNearLossless, True, "pyjpegls"),
    "jpeg2000-lossless": (lambda g: compressed(cr_dataset(g), JPEG2000Lossless), JPEG2000Lossless,
                          False, "pylibjpeg"),
    "jpeg2000-lossy": (lambda g: compressed(cr_dataset(g), JPEG2000, j2k_cr=[20]), JPEG2000, True,
                       "pylibjpeg"),
    "jpeg-extended-12bit": (_gdcm("JPEGExtendedProcess2_4", quality=90), JPEGExtended12Bit, True,
                            "pillow"),  # Pillow refuses 12 bits; GDCM, then gdcm-12bit, read it
    "jpeg-baseline-8bit": (jpeg_baseline, JPEGBaseline8Bit, True, "pillow"),
}


@pytest.fixture(scope="module")
def sources(sample_xrays):
    """(PNG bytes, decoded gray) of one real Covid and one real Normal test-split X-ray."""
    out = []
    for path in (sample_xrays["covid"][0], sample_xrays["normal"][0]):
        png = plain_png(path)
        out.append((png, decode_image(png)))
    return out


@pytest.fixture(scope="module")
def png_answers(shipped_predictor, sources):
    return [shipped_predictor.predict_upload(png).probabilities["Covid"] for png, _ in sources]


@pytest.mark.parametrize("name", sorted(SYNTAXES))
def test_cr_chest_xray_in_every_syntax(client, shipped_predictor, sources, png_answers, name):
    build, syntax, lossy, first_decoder = SYNTAXES[name]
    for (_png, gray), png_covid in zip(sources, png_answers):
        data = build(gray)
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
        assert ds.Modality == "CR" and ds.BodyPartExamined == "CHEST"
        if syntax is None:
            assert data[128:132] != b"DICM" and "TransferSyntaxUID" not in getattr(ds, "file_meta", {})
        else:
            assert ds.file_meta.TransferSyntaxUID == syntax
            assert plugins_for(syntax)[0] == first_decoder
        decoded = decode_image(data)
        diff = np.abs(decoded.astype(int) - gray)
        if lossy:
            assert diff.mean() < 2.0, (name, diff.mean())
        else:
            np.testing.assert_array_equal(decoded, gray, err_msg=name)
        response = predict(client, data)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["label"] in ("Covid", "Normal")
        assert "Test^Synthetic" not in response.get_data(as_text=True)
        covid = shipped_predictor.predict_upload(data).probabilities["Covid"]
        assert abs(covid - png_covid) <= (0.10 if lossy else 0.05), (name, covid, png_covid)


def test_htj2k_has_a_decoder():
    """No encoder for HTJ2K in this stack (OpenJPEG 2.5 decodes it only) and no HTJ2K file in
    pydicom's bundled set: what is checked is that a decoder is installed for all three."""
    for syntax in (HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K):
        assert plugins_for(syntax) == ("pylibjpeg",)
