"""DICOM decoding: X-rays as radiology systems actually store them, to the same 8-bit gray
array ``cxr.images`` gives for PNG and JPEG (``cxr.decode`` dispatches to both).

Why it is written this way:

* Privacy: only the image-related tags listed in :data:`IMAGE_TAGS` and the header tags of
  ``cxr.dicom_header`` (Modality, Body Part Examined, View Position) are parsed
  (``dcmread(specific_tags=...)``); patient names, IDs and dates are never read, so they
  cannot leak into a response, a log line or an error message.
* The header speaks first: a file whose header says it is not a frontal chest radiograph
  is refused (``cxr.dicom_header``) before the transfer syntax is looked at or any pixel
  is decoded.
* Tolerant reading: a file without the 128-byte preamble and file meta (older archives) is
  read when its first bytes are a plausible first data element (:func:`looks_like_dataset`)
  and it parses into a dataset with pixel data and image size, or a Modality; its transfer
  syntax (implicit/explicit VR, byte order) is the one pydicom found while parsing. A file
  whose meta omits the transfer syntax is treated the same way. Anything else stays
  ``NotAnImage``.
* Display pipeline of DICOM PS3.3 C.11, in order: stored values -> Modality LUT or
  Rescale Slope/Intercept -> VOI LUT or Window Center/Width -> MONOCHROME1 (or an
  INVERSE Presentation LUT) inverted -> 8 bits. The LUT and window code is our own: pydicom
  3.0.2's ``apply_voi_lut`` indexes an 8-bit LUT with a uint8 array and mis-scales LUTs of
  10-15 bits per entry.
* Without a VOI LUT or window, the nominal output range (from Bits Stored and the rescale)
  is mapped linearly to 0-255: the same rule as 16-bit PNGs (65535 -> 255), so a DICOM and
  a PNG export of the same pixels give the same input.
* Compressed transfer syntaxes are decoded by the plugins ``cxr.dicom_codecs`` orders (GDCM,
  pylibjpeg-openjpeg, pylibjpeg-rle, pyjpegls, Pillow); a syntax none of them reads is
  refused (``UnsupportedFormat``) naming it, before any pixel data is touched.
* Deflated datasets are inflated here with a bound (:data:`MAX_INFLATED_BYTES`): pydicom
  would inflate a deflate bomb whole.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

from .dicom_codecs import check_frame, decode_first_frame, plugins_for
from .dicom_header import HEADER_TAGS, check_header
from .errors import ImageTooLarge, InputError, NotAnImage, UndecodableImage, UnsupportedFormat
from .images import MAX_PIXELS, check_dimensions

#: The only data elements read from an upload (plus the file meta group, which pydicom
#: always reads and which holds no patient data).
IMAGE_TAGS = (
    "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames",
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "RescaleIntercept", "RescaleSlope", "ModalityLUTSequence",
    "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence", "PresentationLUTShape",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "PixelData", "FloatPixelData", "DoubleFloatPixelData",
)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

#: A deflated dataset may inflate to at most this many bytes (the pixels of the largest
#: image ``check_dimensions`` lets through, 16-bit RGB, plus room for the header).
MAX_INFLATED_BYTES = MAX_PIXELS * 6 + (1 << 20)

_DEFLATED = "1.2.840.10008.1.2.1.99"

# Value Representations, for recognising an explicit-VR first element without a preamble.
_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}


def supported_transfer_syntaxes() -> list[str]:
    """Names of the transfer syntaxes this installation decodes (uncompressed ones included)."""
    from pydicom.uid import UID, AllTransferSyntaxes

    return [UID(uid).name for uid in AllTransferSyntaxes if plugins_for(UID(uid))]


def looks_like_dataset(data: bytes) -> bool:
    """Whether ``data`` may be a DICOM dataset without preamble and file meta: its first
    element is in group 0002 (file meta) or 0008 (identification), little or big endian,
    with a known explicit VR or a plausible implicit-VR length. Cheap; decides nothing alone."""
    if len(data) < 16:
        return False
    for order in "<>":
        group, _element = struct.unpack(order + "HH", data[:4])
        if group not in (0x0002, 0x0008):
            continue
        if data[4:6] in _VRS:
            return True
        if order == "<" and struct.unpack("<I", data[4:8])[0] <= len(data) - 8:
            return True
    return False


def decode_dicom(data: bytes) -> np.ndarray:
    """DICOM bytes -> 2-D uint8 gray (first frame), or raise an ``InputError``.

    Part 10 files (``DICM`` at byte 128) and, tolerantly, bare datasets without preamble and
    file meta (see :func:`looks_like_dataset`)."""
    ds = read_header(data)
    try:
        check_header(ds)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a header value pydicom cannot convert
        raise UndecodableImage(
            f"The DICOM header could not be read ({exc.__class__.__name__})."
        ) from None
    return decode_pixels(ds)


def read_header(data: bytes):
    """Parse the image and header tags only; ``NotAnImage`` for a bare dataset that does not
    parse as an image, ``UndecodableImage`` for a damaged Part 10 file."""
    part10 = data[128:132] == b"DICM"
    try:
        ds = _read(data, force=not part10)
    except (ImageTooLarge, UndecodableImage):
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        if not part10:
            raise _not_an_image() from None
        raise UndecodableImage(
            f"The DICOM file could not be read ({exc.__class__.__name__})."
        ) from None
    if not part10:
        has_image = any(k in ds for k in _PIXEL_KEYWORDS) and "Rows" in ds and "Columns" in ds
        if not (has_image or ds.get("Modality")):
            raise _not_an_image()
    return ds


def decode_pixels(ds) -> np.ndarray:
    """The first frame of a parsed dataset as 2-D uint8 gray; the header rules are not
    applied here (``decode_dicom`` does that first)."""
    try:
        return _decode_pixels(ds)
    except InputError:
        raise
    except MemoryError:
        raise ImageTooLarge("The DICOM image is too large to decode in memory.") from None
    except Exception as exc:  # noqa: BLE001 - odd header values, damaged pixel data
        raise UndecodableImage(
            f"The DICOM pixel data could not be decoded ({exc.__class__.__name__})."
        ) from None


def _decode_pixels(ds) -> np.ndarray:
    tsyntax = _transfer_syntax(ds)
    plugins = plugins_for(tsyntax)
    if not plugins:
        label = tsyntax.name if tsyntax.is_valid and tsyntax.name != str(tsyntax) else "unknown"
        raise UnsupportedFormat(
            f"DICOM transfer syntax {label} ({tsyntax}) cannot be decoded here. Send it "
            "uncompressed, deflated, RLE, JPEG (baseline, extended, lossless), JPEG-LS, "
            "JPEG 2000 or HTJ2K, or as a PNG/JPEG export."
        )
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise UndecodableImage("The DICOM file has no pixel data (it is not an image).")
    if "Rows" not in ds or "Columns" not in ds:
        raise UndecodableImage("The DICOM file has pixel data but no Rows/Columns.")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    check_dimensions(cols, rows, what="DICOM image")
    check_frame(ds, str(tsyntax))
    arr = decode_first_frame(ds, plugins)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        return _monochrome_to_gray8(arr, ds, photometric)
    return _color_to_gray8(arr, ds, photometric)


def _not_an_image() -> NotAnImage:
    # cxr.decode words it for the user (with the accepted formats) when it passes through.
    return NotAnImage("The data is neither a DICOM file nor a DICOM dataset.")


def _read(data: bytes, force: bool):
    import pydicom

    tags = list(IMAGE_TAGS) + list(HEADER_TAGS)
    ds = _read_deflated(data, tags) if not force else None
    if ds is None:
        ds = pydicom.dcmread(io.BytesIO(data), specific_tags=tags, force=force)
    # Elements are parsed lazily; touch the few we need so damage surfaces here.
    for keyword in ("Rows", "Columns", "PhotometricInterpretation", "BitsStored") + HEADER_TAGS:
        ds.get(keyword)
    return ds


def _read_deflated(data: bytes, tags: list[str]):
    """A Deflated Explicit VR Little Endian file, inflated with a bound; None for any other."""
    if _DEFLATED.encode() not in data[:4096]:
        return None
    from pydicom.dataset import FileDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    fp = DicomBytesIO(data)
    preamble = read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    if meta.get("TransferSyntaxUID") != _DEFLATED:
        return None
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        raw = inflater.decompress(data[fp.tell():], MAX_INFLATED_BYTES + 1)
    except zlib.error:
        raise UndecodableImage("The deflated DICOM dataset could not be inflated.") from None
    if len(raw) > MAX_INFLATED_BYTES:
        raise ImageTooLarge(
            f"The deflated DICOM dataset inflates to more than "
            f"{MAX_INFLATED_BYTES // 1_000_000} MB; refused before reading it."
        )
    from pydicom.tag import Tag

    dataset = read_dataset(DicomBytesIO(raw), False, True, specific_tags=[Tag(t) for t in tags])
    ds = FileDataset(io.BytesIO(raw), dataset, preamble, meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds


def _transfer_syntax(ds):
    """The declared transfer syntax; without one (bare dataset, or meta without it) the
    encoding pydicom found while parsing, when the pixel data is native (not encapsulated)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    declared = meta.get("TransferSyntaxUID") if meta is not None else None
    if declared:
        return UID(str(declared))
    implicit, little = ds.original_encoding
    encapsulated = False
    if "PixelData" in ds:
        element = ds.get_item("PixelData")
        encapsulated = getattr(element, "length", 0) == 0xFFFFFFFF or getattr(
            element, "is_undefined_length", False)
    if implicit is None or encapsulated:
        raise UndecodableImage(
            "The DICOM file declares no transfer syntax and its pixel data is compressed."
        )
    tsyntax = ImplicitVRLittleEndian if implicit else (
        ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = tsyntax
    return tsyntax


def _monochrome_to_gray8(arr: np.ndarray, ds, photometric: str) -> np.ndarray:
    values, lo, hi = _modality(arr, ds)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        unit = _voi_lut(values, ds.VOILUTSequence[0], ds)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        unit = _window(values, _first(ds.WindowCenter), _first(ds.WindowWidth),
                       str(ds.get("VOILUTFunction", "LINEAR")).upper())
    else:
        if lo is None:  # float pixel data: no nominal range, use the data's own
            lo, hi = float(np.min(values)), float(np.max(values))
        unit = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    unit = np.clip(unit, 0.0, 1.0)
    inverse = str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
    if (photometric == "MONOCHROME1") != inverse:
        unit = 1.0 - unit
    return np.rint(unit * 255.0).astype(np.uint8)


def _modality(arr: np.ndarray, ds) -> tuple[np.ndarray, float | None, float | None]:
    """Apply the Modality LUT or rescale; return float values and their nominal range."""
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float64), None, None
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        item = ds.ModalityLUTSequence[0]
        lut, depth = _lut_table(item, ds)
        return _lookup(arr, lut, int(item.LUTDescriptor[1])), 0.0, float(2**depth - 1)
    bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8) or arr.dtype.itemsize * 8)
    if int(ds.get("PixelRepresentation", 0) or 0):
        lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    else:
        lo, hi = 0.0, 2.0**bits - 1
    values = arr.astype(np.float64)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        slope, intercept = float(slope), float(intercept)
        values = values * slope + intercept
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    return values, lo, hi


def _voi_lut(values: np.ndarray, item, ds) -> np.ndarray:
    """VOI LUT Sequence item -> values in [0, 1] (output scaled by its bits per entry)."""
    lut, depth = _lut_table(item, ds)
    out = _lookup(np.rint(values).astype(np.int64), lut, int(item.LUTDescriptor[1]))
    return out / float(2**depth - 1)


def _lut_table(item, ds) -> tuple[np.ndarray, int]:
    """Decode a LUT item's data; returns (table as int64, bits per entry)."""
    entries, _first_mapped, depth = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    raw = item.LUTData
    if isinstance(raw, (bytes, bytearray)):  # OW: 16-bit words in the dataset's byte order
        little = getattr(ds, "is_little_endian", True) is not False
        table = np.frombuffer(bytes(raw), dtype="<u2" if little else ">u2")
    else:
        table = np.asarray(raw if isinstance(raw, (list, tuple)) else [raw])
    table = table.astype(np.int64)[:entries]
    if table.size == 0:
        raise UndecodableImage("The DICOM file has an empty lookup table.")
    if depth not in range(8, 17):
        raise UndecodableImage(f"The DICOM lookup table has {depth} bits per entry (8-16 allowed).")
    return table, depth


def _lookup(values: np.ndarray, table: np.ndarray, first_mapped: int) -> np.ndarray:
    index = np.clip(values.astype(np.int64) - first_mapped, 0, table.size - 1)
    return table[index].astype(np.float64)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """Window Center/Width per PS3.3 C.11.2.1.2 -> values in [0, 1]."""
    if function == "SIGMOID":
        if width <= 0:
            raise UndecodableImage("The DICOM Window Width must be positive.")
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise UndecodableImage("The DICOM Window Width must be positive.")
        return (values - center) / width + 0.5
    if width < 1:
        raise UndecodableImage("The DICOM Window Width must be at least 1.")
    if width == 1:
        return (values >= center - 0.5).astype(np.float64)
    return (values - (center - 0.5)) / (width - 1) + 0.5


def _first(value) -> float:
    """Window values may be multi-valued (alternative windows): the first is the default."""
    from pydicom.multival import MultiValue

    return float(value[0]) if isinstance(value, (MultiValue, list, tuple)) else float(value)


def _color_to_gray8(arr: np.ndarray, ds, photometric: str) -> np.ndarray:
    """RGB / YBR (already converted to RGB by pydicom) or PALETTE COLOR -> Pillow's 'L' luma."""
    from PIL import Image

    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise UnsupportedFormat(f"DICOM photometric interpretation {photometric} is not supported.")
    if arr.dtype != np.uint8:
        bits = 16 if photometric == "PALETTE COLOR" else int(ds.get("BitsStored", 8) or 8)
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0 / (2**bits - 1)), 0, 255)
        arr = arr.astype(np.uint8)
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr), mode="RGB").convert("L"))
