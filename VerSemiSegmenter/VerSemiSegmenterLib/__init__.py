"""Plain-Python library behind the VerSemiSegmenter Slicer module.

The modules here import neither ``qt`` nor ``slicer`` at module level, so they run (and are tested)
outside Slicer. The MRML parts (``segmentation_import``, ``volume_export``, ``review``) import
``slicer`` inside their functions; they work with Slicer itself and with the ``slicer-core`` package.
``review`` imports ``versemi.review`` only when a review folder is opened (never torch).
"""
