"""What prepare's fork server loads once, so that every pool worker forked from it starts warm.

Imported by the fork server (`prepare._pool_context`), never by the harness itself: the converter's
modules, pydicom with its pixel decoders (imported lazily by `harness.data.dicom`; ~0.3-0.4 s on a
worker's first file otherwise), Pillow's image plugins (its reduced JPEG 2000 decoding loads them
all on first use) and the compiled area-shrink kernels (loading them from numba's cache takes
~0.4 s, which every worker would otherwise pay on its first image).
"""
import pydicom.pixels  # noqa: F401 - imported for the fork server's children
from PIL import Image

from harness.data import area, prepare  # noqa: F401 - imported for the fork server's children

Image.init()
area.warm_up()
