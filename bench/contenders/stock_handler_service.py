"""The handler service of the stock pattern AWS documents for custom containers: the
toolkit's DefaultHandlerService with its Transformer and DefaultInferenceHandler. MMS loads a
handler module by its one class, so this module holds exactly one."""

from sagemaker_inference.default_handler_service import DefaultHandlerService
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler
from sagemaker_inference.transformer import Transformer


class HandlerService(DefaultHandlerService):
    def __init__(self) -> None:
        super().__init__(
            transformer=Transformer(default_inference_handler=DefaultInferenceHandler())
        )
