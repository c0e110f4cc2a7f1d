"""Compressed DICOM pixel data: which decoder reads which transfer syntax, and the checks
on a compressed frame before any decoder sees it.

Decoding goes through pydicom's pixel-data plugin system; the plugins come from these
packages (all permissive licences, all wheels for CPython 3.11 manylinux x86_64):

===================================  =========================================================
transfer syntax                      plugins, in the order tried
===================================  =========================================================
JPEG Baseline (8-bit)                Pillow (libjpeg-turbo, as for a JPEG upload), GDCM
JPEG Extended (12-bit)               Pillow (8-bit samples), GDCM, ``gdcm-12bit`` (below)
JPEG Lossless (process 14, SV1)      GDCM
JPEG-LS lossless / near-lossless     pyjpegls (CharLS), GDCM
JPEG 2000 lossless / lossy           pylibjpeg-openjpeg (OpenJPEG), GDCM, Pillow
HTJ2K (three syntaxes)               pylibjpeg-openjpeg
RLE Lossless                         pylibjpeg-rle, pydicom's own
===================================  =========================================================

``pylibjpeg-libjpeg`` (GPL-3.0) is not used: GDCM (BSD) reads the same JPEG processes, and a
GPL decoder would bind whoever ships the container image.

pydicom 3.0.2 refuses to ask GDCM for 12-bit JPEG Extended (older GDCM builds got it wrong);
python-gdcm 3.2.6 decodes it correctly (within 1 of libjpeg's IDCT), so this module adds
that one case as the plugin ``gdcm-12bit``, registered on first use.

A compressed frame is checked before it is decoded: its own header (JPEG SOF, JPEG-LS SOF55,
JPEG 2000 SIZ) must declare the size the DICOM header declares, so a few bytes claiming
60000x60000 pixels cannot make a decoder allocate gigabytes (Pillow has a bomb check, OpenJPEG,
CharLS and GDCM have none); and a JPEG process 1/2/4/14 frame gets the same marker walk as a
JPEG upload, because libjpeg (in Pillow and in GDCM) fills a corrupt scan with gray and only
warns.
"""

from __future__ import annotations

import threading

from .errors import UndecodableImage
from .images import check_jpeg_structure

#: Plugins in the order tried, by transfer syntax UID (any other syntax: pydicom's default).
PLUGIN_ORDER = {
    "1.2.840.10008.1.2.4.50": ("pillow", "gdcm"),
    "1.2.840.10008.1.2.4.51": ("pillow", "gdcm", "gdcm-12bit"),
    "1.2.840.10008.1.2.4.57": ("gdcm",),
    "1.2.840.10008.1.2.4.70": ("gdcm",),
    "1.2.840.10008.1.2.4.80": ("pyjpegls", "gdcm"),
    "1.2.840.10008.1.2.4.81": ("pyjpegls", "gdcm"),
    "1.2.840.10008.1.2.4.90": ("pylibjpeg", "gdcm", "pillow"),
    "1.2.840.10008.1.2.4.91": ("pylibjpeg", "gdcm", "pillow"),
    "1.2.840.10008.1.2.4.201": ("pylibjpeg",),
    "1.2.840.10008.1.2.4.202": ("pylibjpeg",),
    "1.2.840.10008.1.2.4.203": ("pylibjpeg",),
    "1.2.840.10008.1.2.5": ("pylibjpeg", "pydicom"),
}

_JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
# Frames walked marker by marker like a JPEG upload (DCT and lossless Huffman JPEG; JPEG-LS
# stuffs bits differently and is left to CharLS).
_JPEG_WALKED = ("1.2.840.10008.1.2.4.50", _JPEG_EXTENDED, "1.2.840.10008.1.2.4.57",
                "1.2.840.10008.1.2.4.70")
_JPEG_LS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
_J2K = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")
# Start-of-frame markers: SOF0-3, 5-7, 9-11, 13-15 and JPEG-LS SOF55 (0xF7).
_SOF = {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xF7}

# ---- the pydicom plugin for 12-bit JPEG Extended through GDCM ------------------------------

DECODER_DEPENDENCIES = {_JPEG_EXTENDED: ("gdcm>=3.0.10",)}


def is_available(uid: str) -> bool:
    """pydicom plugin hook: GDCM is installed and ``uid`` is JPEG Extended."""
    try:
        import gdcm  # noqa: F401
    except ImportError:
        return False
    return uid == _JPEG_EXTENDED


def _decode_frame(src: bytes, runner) -> bytes:
    """pydicom plugin hook: one 12-bit JPEG Extended frame -> little-endian 16-bit samples."""
    import gdcm

    if runner.samples_per_pixel != 1 or not 8 < runner.bits_stored <= 12:
        raise NotImplementedError("gdcm-12bit reads 9-12 bit monochrome frames only")
    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(src)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())
    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((runner.columns, runner.rows, 1))
    image.SetDataElement(element)
    pi_type = gdcm.PhotometricInterpretation.GetPIType(runner.photometric_interpretation)
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(pi_type))
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGExtendedProcess2_4))
    # Bits Allocated 12 picks GDCM's 12-bit libjpeg at once (16 makes it try the 16-bit one
    # first and print "Unsupported JPEG data precision 12" to stderr); output is 16-bit words.
    image.SetPixelFormat(gdcm.PixelFormat(1, 12, 12, 11, runner.pixel_representation))
    buffer = image.GetBuffer()
    if buffer is None:
        raise RuntimeError("GDCM could not decode the JPEG Extended frame")
    frame = buffer.encode("utf-8", "surrogateescape")  # GDCM hands char* over as str
    if len(frame) != runner.rows * runner.columns * 2:
        raise RuntimeError("GDCM returned a frame of the wrong size")
    runner.set_option("bits_allocated", 16)
    return frame


_registered = False
_register_lock = threading.Lock()


def register() -> None:
    """Add ``gdcm-12bit`` to pydicom's JPEG Extended decoder, once per process (pydicom's
    ``add_plugin`` is not thread-safe, gunicorn workers run threads). Called on first use, so
    importing this module does not import pydicom."""
    global _registered
    with _register_lock:
        if _registered:
            return
        from pydicom.pixels import get_decoder
        from pydicom.uid import JPEGExtended12Bit

        try:
            get_decoder(JPEGExtended12Bit).add_plugin("gdcm-12bit", (__name__, "_decode_frame"))
        except ValueError:  # already there (pydicom refuses a second plugin of one name)
            pass
        _registered = True


def plugins_for(tsyntax: str) -> tuple[str, ...]:
    """The installed plugins for ``tsyntax`` in our order; ``("",)`` (pydicom's choice) for
    the uncompressed syntaxes, which need none; ``()`` when none is installed."""
    from pydicom.pixels import get_decoder

    register()
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        return ()
    if not tsyntax.is_compressed:
        return ("",)
    installed = decoder.available_plugins
    ordered = [p for p in PLUGIN_ORDER.get(str(tsyntax), ()) if p in installed]
    return tuple(ordered + [p for p in installed if p not in ordered])


def decode_first_frame(ds, plugins: tuple[str, ...]):
    """The first frame as pydicom returns it, trying ``plugins`` in turn."""
    from pydicom.pixels import pixel_array

    failures = []
    for plugin in plugins:
        try:
            return pixel_array(ds, index=0, decoding_plugin=plugin)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a decoder failing on untrusted bytes
            failures.append(exc.__class__.__name__)
    raise UndecodableImage(
        f"The DICOM pixel data could not be decoded ({', '.join(sorted(set(failures)))})."
    )


# ---- checks on a compressed frame before decoding ----------------------------------------

def check_frame(ds, tsyntax: str) -> None:
    """Refuse a compressed first frame whose own header disagrees with Rows/Columns, and a
    structurally corrupt JPEG frame, before any decoder allocates or guesses."""
    if tsyntax not in _JPEG_WALKED + _JPEG_LS + _J2K:
        return
    from pydicom.encaps import get_frame

    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        frame = get_frame(ds.PixelData, 0, number_of_frames=frames)
    except Exception as exc:  # noqa: BLE001 - malformed encapsulation
        raise UndecodableImage(
            f"The DICOM pixel data could not be decoded ({exc.__class__.__name__})."
        ) from None
    if tsyntax in _J2K:
        size = _j2k_size(frame)
        kind = "JPEG 2000"
    else:
        if not frame.startswith(b"\xff\xd8"):
            raise UndecodableImage("The DICOM JPEG frame does not start with a JPEG marker.")
        size = _jpeg_size(frame)
        kind = "JPEG-LS" if tsyntax in _JPEG_LS else "JPEG"
    if size is None:
        raise UndecodableImage(f"The DICOM {kind} frame has no frame header.")
    width, height = size
    rows, cols = int(ds.Rows), int(ds.Columns)
    if width != cols or height not in (rows, 0):  # JPEG height 0: given later by a DNL marker
        raise UndecodableImage(
            f"The DICOM {kind} frame is {width}x{height} pixels but the header says "
            f"{cols}x{rows}."
        )
    if tsyntax in _JPEG_WALKED:
        check_jpeg_structure(frame)


def _jpeg_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF segment before the first scan, or None."""
    pos, n = 2, len(frame)
    while pos + 4 <= n:
        if frame[pos] != 0xFF:
            return None
        marker = frame[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or first scan: no frame header before it
            return None
        length = int.from_bytes(frame[pos + 2:pos + 4], "big")
        if marker in _SOF:
            if pos + 9 > n:
                return None
            height = int.from_bytes(frame[pos + 5:pos + 7], "big")
            width = int.from_bytes(frame[pos + 7:pos + 9], "big")
            return width, height
        if length < 2:
            return None
        pos += 2 + length
    return None


def _j2k_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) of the image area from the SIZ segment of a J2K codestream (or of one
    wrapped in a JP2 header), or None."""
    pos = frame.find(b"\xff\x4f\xff\x51", 0, 4096)
    if pos < 0 or pos + 24 > len(frame):
        return None
    siz = frame[pos + 4:pos + 24]  # Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz
    xsiz, ysiz, xosiz, yosiz = (int.from_bytes(siz[i:i + 4], "big") for i in (4, 8, 12, 16))
    return max(xsiz - xosiz, 0), max(ysiz - yosiz, 0)

