"""DICOM decoding: X-rays as radiology systems actually store them, to the same 8-bit gray
array ``cxr.images`` gives for PNG and JPEG (``cxr.decode`` dispatches to both).

Why it is written this way:

* Privacy: only the image-related tags listed in :data:`IMAGE_TAGS` are parsed
  (``dcmread(specific_tags=...)``); patient names, IDs and dates are never read, so they
  cannot leak into a response, a log line or an error message.
* Display pipeline of DICOM PS3.3 C.11, in order: stored values -> Modality LUT or
  Rescale Slope/Intercept -> VOI LUT or Window Center/Width -> MONOCHROME1 (or an
  INVERSE Presentation LUT) inverted -> 8 bits. The LUT and window code is our own: pydicom
  3.0.2's ``apply_voi_lut`` indexes an 8-bit LUT with a uint8 array and mis-scales LUTs of
  10-15 bits per entry.
* Without a VOI LUT or window, the nominal output range (from Bits Stored and the rescale)
  is mapped linearly to 0-255: the same rule as 16-bit PNGs (65535 -> 255), so a DICOM and
  a PNG export of the same pixels give the same input.
* Compressed transfer syntaxes are decoded when pydicom can with the installed packages
  (RLE Lossless natively, JPEG Baseline/Extended and JPEG 2000 through Pillow); any other
  syntax is refused (``UnsupportedFormat``) naming it, before any pixel data is touched.
"""

from __future__ import annotations

import io

import numpy as np

from .errors import UndecodableImage, UnsupportedFormat
from .images import check_dimensions, check_jpeg_structure

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


def supported_transfer_syntaxes() -> list[str]:
    """Names of the transfer syntaxes this installation decodes (uncompressed ones included)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import AllTransferSyntaxes, UID

    names = []
    for uid in AllTransferSyntaxes:
        try:
            if get_decoder(UID(uid)).is_available:
                names.append(UID(uid).name)
        except NotImplementedError:
            continue
    return names


def decode_dicom(data: bytes) -> np.ndarray:
    """DICOM Part 10 bytes -> 2-D uint8 gray (first frame), or raise an ``InputError``."""
    ds = _read(data)
    _check_transfer_syntax(ds)
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise UndecodableImage("The DICOM file has no pixel data (it is not an image).")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    check_dimensions(cols, rows, what="DICOM image")
    _check_jpeg_frame(ds)
    try:
        from pydicom.pixels import pixel_array

        arr = pixel_array(ds, index=0)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            return _monochrome_to_gray8(arr, ds, photometric)
        return _color_to_gray8(arr, ds, photometric)
    except (UndecodableImage, UnsupportedFormat):
        raise
    except Exception as exc:  # pydicom raises many types for damaged pixel data
        raise UndecodableImage(
            f"The DICOM pixel data could not be decoded ({exc.__class__.__name__})."
        ) from None


def _read(data: bytes):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), specific_tags=list(IMAGE_TAGS))
        # Elements are parsed lazily; touch the few we need so damage surfaces here as UndecodableImage.
        for keyword in ("Rows", "Columns", "PhotometricInterpretation", "BitsStored"):
            ds.get(keyword)
        return ds
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError,
            AttributeError, NotImplementedError) as exc:
        raise UndecodableImage(
            f"The DICOM file could not be read ({exc.__class__.__name__})."
        ) from None


def _check_transfer_syntax(ds) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not tsyntax:
        raise UndecodableImage("The DICOM file declares no transfer syntax.")
    tsyntax = UID(str(tsyntax))
    try:
        available = get_decoder(tsyntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        label = tsyntax.name if tsyntax.is_valid and tsyntax.name != str(tsyntax) else "unknown"
        raise UnsupportedFormat(
            f"DICOM transfer syntax {label} ({tsyntax}) cannot be decoded here. "
            "Send uncompressed, RLE Lossless, JPEG Baseline/Extended or JPEG 2000 DICOM, "
            "or a PNG/JPEG export."
        )


def _check_jpeg_frame(ds) -> None:
    """A JPEG frame gets the same structural check as a JPEG upload: libjpeg fills a corrupt
    scan with gray and only warns, and the model would answer on that half-gray image."""
    from pydicom.encaps import get_frame
    from pydicom.uid import JPEGBaseline8Bit, JPEGExtended12Bit

    if ds.file_meta.TransferSyntaxUID not in (JPEGBaseline8Bit, JPEGExtended12Bit):
        return
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        frame = get_frame(ds.PixelData, 0, number_of_frames=frames)
    except Exception as exc:  # malformed encapsulation
        raise UndecodableImage(
            f"The DICOM pixel data could not be decoded ({exc.__class__.__name__})."
        ) from None
    if not frame.startswith(b"\xff\xd8"):
        raise UndecodableImage("The DICOM JPEG frame does not start with a JPEG marker.")
    check_jpeg_structure(frame)


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
