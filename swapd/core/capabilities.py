"""A model's ``capabilities`` as the fields of its ``/v1/models`` record (llama-swap v225+,
OpenRouter's model-list vocabulary). Pure: config in, dict out."""

from __future__ import annotations

from typing import Any

from swapd.config.model import Capabilities, Modality

__all__ = ["SHADOWED_METADATA", "capability_fields"]

#: User ``metadata`` keys dropped from ``meta.llamaswap`` when capabilities are configured
#: (the generated fields say the same thing, and must not disagree).
SHADOWED_METADATA = ("architecture", "capabilities", "supported_parameters", "context_length")


def capability_fields(caps: Capabilities) -> dict[str, Any]:
    """The record's ``architecture``, ``capabilities``, ``supported_parameters`` and
    ``context_length``; empty when nothing is configured."""
    if not caps.configured:
        return {}
    inputs = [m.value for m in caps.inputs]
    outputs = [m.value for m in caps.outputs]
    fields: dict[str, Any] = {}
    architecture: dict[str, Any] = {}
    if inputs:
        architecture["input_modalities"] = inputs
    if outputs:
        architecture["output_modalities"] = outputs
    if inputs and outputs:
        architecture["modality"] = "+".join(inputs) + "->" + "+".join(outputs)
    if architecture:
        fields["architecture"] = architecture
    takes, gives = set(caps.inputs), set(caps.outputs)
    fields["capabilities"] = {
        "vision": Modality.IMAGE in takes,
        "audio_transcriptions": Modality.AUDIO in takes and Modality.TEXT in gives,
        "audio_speech": Modality.TEXT in takes and Modality.AUDIO in gives,
        "image_generation": Modality.TEXT in takes and Modality.IMAGE in gives,
        "image_to_image": Modality.IMAGE in takes and Modality.IMAGE in gives,
        "function_calling": caps.tools,
        "reranker": caps.reranker,
    }
    if caps.tools:
        fields["supported_parameters"] = ["tools", "tool_choice"]
    if caps.context > 0:
        fields["context_length"] = caps.context
    return fields
