"""What prepare's fork server loads once, so that every pool worker forked from it starts warm.

Imported by the fork server (`prepare._pool_context`), never by the harness itself: the converter's
modules, and the compiled area-shrink kernels (loading them from numba's cache takes ~0.4 s, which
every worker would otherwise pay on its first image).
"""
from harness.data import area, prepare  # noqa: F401 - imported for the fork server's children

area.warm_up()
