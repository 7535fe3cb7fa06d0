"""The scorer as a transformers pipeline: `pipeline("image-aesthetics", model=...)` after `import taskvec_aesthetics`.

```python
import taskvec_aesthetics  # registers the task
from transformers import pipeline

scorer = pipeline("image-aesthetics", model="user/aesthetic-scorer")  # a base, merged or coefficients-only model
scorer("photo.jpg")  # {"score": 6.42}
scorer(["a.jpg", "b.jpg"], batch_size=32)  # [{"score": ...}, {"score": ...}]
```

Each image is opened and preprocessed exactly as `AestheticModel.score` does (EXIF orientation, RGB, the model's own
image processor), and a personalized model's calibration is applied, so both give the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from transformers import Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .errors import InputTypeError
from .modeling import AestheticModel
from .processing import open_image

if TYPE_CHECKING:
    from transformers.pipelines.base import GenericTensor

__all__ = ["TASK", "ImageAestheticsPipeline", "register"]

#: The pipeline task this library registers.
TASK = "image-aesthetics"


class ImageAestheticsPipeline(Pipeline):
    """Scores images with an [`AestheticModel`]: one `{"score": float}` per image, on the model's score range (or on
    the rater's own scale for a calibrated personalized model).

    Inputs: a PIL image, an image file path, or a list (or dataset column) of them; `batch_size` batches the forward
    passes as in any pipeline.
    """

    # The model carries its own image processor (read from the folder it was loaded from): nothing else to load.
    # transformers types these flags as None, though its own pipelines set them to True or False.
    _load_processor = False  # type: ignore[assignment]
    _load_image_processor = False  # type: ignore[assignment]
    _load_feature_extractor = False  # type: ignore[assignment]
    _load_tokenizer = False  # type: ignore[assignment]

    model: AestheticModel
    image_processor: Any  # the model's own (any image processor class), never None once built

    def __init__(self, model: AestheticModel, *, image_processor: Any = None, **kwargs: Any) -> None:
        if not isinstance(model, AestheticModel):
            raise InputTypeError(
                f"the {TASK!r} pipeline needs a taskvec-aesthetics AestheticModel, received {type(model).__name__}"
            )
        super().__init__(model, image_processor=image_processor or model.image_processor, **kwargs)

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        if kwargs:
            raise InputTypeError(
                f"the {TASK!r} pipeline takes no options besides batch_size; received {sorted(kwargs)}"
            )
        return {}, {}, {}

    def preprocess(self, input_: Any, **preprocess_parameters: Any) -> dict[str, GenericTensor]:
        pixels = self.image_processor(images=[open_image(input_)], return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels.to(self.dtype or torch.float32)}

    # transformers types the result as a ModelOutput; its pipelines (zero-shot image classification) return dicts too.
    def _forward(self, model_inputs: dict[str, Any], **forward_parameters: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"scores": self.model(pixel_values=model_inputs["pixel_values"], return_dict=True).scores}

    def postprocess(self, model_outputs: dict[str, torch.Tensor], **postprocess_parameters: Any) -> dict[str, float]:
        return {"score": float(self.model.calibrate(model_outputs["scores"].float().cpu()).reshape(-1)[0])}


def register() -> None:
    """Register the task with transformers (done when this module is imported, which importing
    `transformers.pipelines` after this library does)."""
    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is ImageAestheticsPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=ImageAestheticsPipeline, pt_model=AestheticModel,
                                        type="image")  # fmt: skip


register()
