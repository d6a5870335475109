"""Uncompressed pixel data as a read-only memory map of the file, instead of a copy in memory.

`pydicom.dcmread` reads the pixel data element into a new `bytes` object: for a 2900 × 2700 16-bit
radiograph that is ~15 MB of fresh memory written and then read again, 8-25 ms per file depending on
how busy the memory is, more than the look-up and shrink that follow. Here the dataset is read with
large elements deferred (pydicom keeps their offset and length in the file), and the pixel data
element gets a `memoryview` of a read-only `mmap` of that range, so the pixels are read once, straight
from the page cache, by whatever decodes them (`dicom.decode_view` turns it into an array view).

Mapped only for the little-endian native transfer syntaxes (Implicit / Explicit VR Little Endian),
where the element's value is the pixel bytes as stored at that offset; the file meta group is read
first to tell. Every other file -- compressed, deflated, big endian -- goes straight to the ordinary
read, and so does a file shorter than its pixel data element claims (truncated), which the ordinary
read reports as before. Small pixel data (below `MIN_BYTES`) is read by the deferring read as usual.
The map is released with the last array viewing it. A file changed or truncated while it is being
converted would fault (SIGBUS); `prepare` reads input files that nothing else writes.
"""
from __future__ import annotations

import mmap
import os
from pathlib import Path

MIN_BYTES = 1 << 20  # below this the copy costs well under a millisecond: read the ordinary way
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF


def read_mapped(path: Path):
    """The dataset of `path`, its pixel data a read-only memory map when large and uncompressed; None
    when the file is to be read the ordinary way (see the module docstring). Raises what
    `pydicom.dcmread` raises."""
    import pydicom
    from pydicom import config, uid
    from pydicom.dataelem import DataElement
    from pydicom.filereader import read_file_meta_info

    # the file meta group alone (a few hundred bytes) says whether this file can be mapped at all
    if read_file_meta_info(path).get("TransferSyntaxUID") not in (uid.ImplicitVRLittleEndian,
                                                                  uid.ExplicitVRLittleEndian):
        return None
    ds = pydicom.dcmread(path, defer_size=MIN_BYTES)
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if raw is None or raw.value is not None:  # no pixel data, or small enough to have been read
        return ds
    start, length = raw.value_tell, raw.length
    with open(path, "rb") as handle:
        if length == UNDEFINED_LENGTH or start + length > os.fstat(handle.fileno()).st_size:
            return None  # undefined length or truncated: the ordinary read decides what it is
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)  # keeps its own file descriptor
    # validation would copy the value to check it: the view is exactly the element's bytes
    ds[PIXEL_DATA] = DataElement(PIXEL_DATA, raw.VR, memoryview(mapped)[start:start + length],
                                 validation_mode=config.IGNORE)
    return ds
