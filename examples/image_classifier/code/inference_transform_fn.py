# The transform_fn example of deployment-and-inference.md, section 0.5, with the document's
# model_fn (section 0.1) and the fixes a user needs to serve them (each marked "fixed:");
# ../README.md lists them. Serve it with SAGEMAKER_PROGRAM=inference_transform_fn.py.

import base64
import io
import json
import os  # fixed: model_fn uses os

import torch
import torchvision.transforms as transforms
from PIL import Image


def model_fn(model_dir) -> torch.nn.Module:
    model_path = os.path.join(model_dir, "best.pt")
    # fixed: weights_only=False trusts the whole pickled model (torch.save(model, ...)),
    # which torch.load refuses by default since torch 2.6.
    return torch.load(model_path, weights_only=False)


def transform_fn(model, request_body, request_content_type, accept):
    # Input processing
    if request_content_type == "application/json":
        input_data = json.loads(request_body)

        # Decode and preprocess image
        image_data = base64.b64decode(input_data["image"])
        # fixed: .convert("RGB"), since Normalize takes 3 channels (a PNG may have 4, or 1)
        image = Image.open(io.BytesIO(image_data)).convert("RGB")

        transform = transforms.Compose(
            [
                transforms.Resize((224, 224)),
                transforms.ToTensor(),
                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            ]
        )
        processed_image = transform(image).unsqueeze(0)

        # Model inference
        model.eval()
        with torch.no_grad():
            outputs = model(processed_image)
            probabilities = torch.nn.functional.softmax(outputs, dim=1)
            predicted_class = torch.argmax(probabilities, dim=1)

        # Output formatting
        if accept == "application/json":
            response = {
                "predicted_class": int(predicted_class[0]),
                "confidence": float(probabilities[0][predicted_class[0]]),
                "all_probabilities": probabilities[0].tolist(),
            }
            return json.dumps(response)
        # fixed: say so for another Accept, instead of returning None
        raise ValueError(f"Unsupported accept type: {accept}")

    else:
        raise ValueError(f"Unsupported content type: {request_content_type}")
