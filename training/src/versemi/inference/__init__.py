"""versemi.inference: checkpoint -> preprocessing -> sliding window -> labelmap on the input grid.

The one inference path shared by ``versemi predict``, ``versemi pseudolabel``, evaluation and the
Slicer module::

    from versemi.inference import Predictor

    predictor = Predictor("model.pt", device="auto")
    result = predictor.predict(image, "liver,spleen")        # PredictionResult (labelmap on image's grid)
    predictor.predict_file("ct.nrrd", "ct_seg.nii.gz", "all")  # + ct_seg.json + ct_seg.ctbl, atomically
"""

from versemi.inference.io import InputImageError, read_input_image, validate_input_image
from versemi.inference.predictor import (
    LabelEntry,
    PredictFileResult,
    PredictionError,
    PredictionResult,
    Predictor,
    resolve_device,
)

__all__ = [
    "InputImageError",
    "LabelEntry",
    "PredictFileResult",
    "PredictionError",
    "PredictionResult",
    "Predictor",
    "read_input_image",
    "resolve_device",
    "validate_input_image",
]
