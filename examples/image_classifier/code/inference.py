# The handler functions of deployment-and-inference.md, sections 0.1 to 0.4, with the fixes a
# user needs to serve them (each marked "fixed:"); ../README.md lists them.

import base64
import io
import json
import os  # fixed: model_fn uses os
from datetime import datetime  # fixed: output_fn uses datetime

import numpy as np
import torch
import torchvision.transforms as transforms
from PIL import Image


def input_fn(request_body, request_content_type) -> torch.Tensor:
    """
    Preprocess input data before feeding it to the model

    Args:
        request_body: The raw input data from the request
        request_content_type: MIME type of the input data (e.g., 'application/json')

    Returns:
        processed_input: Data in the format expected by your model
    """
    if request_content_type == "application/json":
        # Parse JSON request
        input_data = json.loads(request_body)

        # Decode base64 image
        image_data = base64.b64decode(input_data["image"])
        # fixed: .convert("RGB"), since Normalize takes 3 channels (a PNG may have 4, or 1)
        image = Image.open(io.BytesIO(image_data)).convert("RGB")

        # Apply preprocessing transforms
        transform = transforms.Compose(
            [
                transforms.Resize((224, 224)),
                transforms.ToTensor(),
                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            ]
        )

        # Convert to tensor and add batch dimension
        processed_image = transform(image).unsqueeze(0)
        return processed_image

    else:
        raise ValueError(f"Unsupported content type: {request_content_type}")


def model_fn(model_dir) -> torch.nn.Module:
    model_path = os.path.join(model_dir, "best.pt")

    # This line does the "loading":
    # 1. Reads the .pt file from disk
    # 2. Deserializes the binary data
    # 3. Reconstructs the neural network in memory
    # 4. Restores all the trained weights/parameters
    # 5. Creating a usable Python object that can make predictions
    # fixed: weights_only=False. best.pt is a whole pickled model (torch.save(model, ...)),
    # which torch.load refuses by default since torch 2.6, because unpickling runs code from
    # the file: this trusts the file. Its class, classifier.ImageClassifier, is in code/.
    model = torch.load(model_path, weights_only=False)

    # Now 'model' is a live Python object that can:
    # - Accept input data
    # - Run forward passes
    # - Make predictions

    return model


def predict_fn(input_data, model) -> dict:
    """
    Run inference on the preprocessed input data

    Args:
        input_data: Preprocessed data from input_fn(). Default is torch.Tensor
        model: Loaded model from model_fn()

    Returns:
        predictions: Raw output from the model (e.g., probabilities or class labels)
        Default is torch.Tesnor
    """

    # Set model to evaluation mode
    model.eval()

    # Disable gradient computation for inference
    with torch.no_grad():
        # Run forward pass
        outputs = model(input_data)

        # Apply softmax to get probabilities
        probabilities = torch.nn.functional.softmax(outputs, dim=1)

        # Get predicted classes
        predicted_classes = torch.argmax(probabilities, dim=1)

    return {
        "probabilities": probabilities.cpu().numpy(),
        "predictions": predicted_classes.cpu().numpy(),
    }


def output_fn(prediction, content_type) -> str:
    """
    Post-process model predictions and format the response

    Args:
        prediction: Raw output from predict_fn()
        content_type: MIME type for the response (e.g., 'application/json')

    Returns:
        response: Formatted response data
    """
    if content_type == "application/json":
        # Convert numpy arrays to lists for JSON serialization
        if isinstance(prediction["probabilities"], np.ndarray):
            prediction["probabilities"] = prediction["probabilities"].tolist()
        if isinstance(prediction["predictions"], np.ndarray):
            prediction["predictions"] = prediction["predictions"].tolist()

        # Format the response
        response = {
            "statusCode": 200,
            "predictions": prediction["predictions"],
            "confidence_scores": prediction["probabilities"],
            "timestamp": str(datetime.now()),
        }

        return json.dumps(response)

    else:
        # fixed: content_type, the Accept asked for (`accept` is not defined here)
        raise ValueError(f"Unsupported accept type: {content_type}")
