"""Where the model comes from: a directory (what SageMaker mounts after unpacking model.tar.gz),
or a model.tar.gz itself, given by SERVING_MODEL_ARCHIVE or lying alone in the model directory.
An archive is unpacked safely (archive.py) into the server's private run directory, and the
settings are read again for that directory, so that its code/ is found as for a directory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from sagemaker_torch_serving.archive import ArchiveError, lone_archive, unpack
from sagemaker_torch_serving.settings import Env, Settings

logger = logging.getLogger(__name__)


class ModelSourceError(Exception):
    """The model cannot be found or unpacked; the message says what to change."""


def archive_to_unpack(settings: Settings) -> Path | None:
    """The archive to serve, or None when the model directory is served as it is."""
    if settings.model_archive is not None:
        if not settings.model_archive.is_file():
            raise ModelSourceError(
                f"{Env.MODEL_ARCHIVE} names {settings.model_archive}, which is not a file"
            )
        return settings.model_archive
    return lone_archive(settings.model_dir)


def unpack_model(settings: Settings, archive: Path, destination: Path) -> Settings:
    """Unpack ``archive`` into ``destination`` and return the settings for serving it."""
    try:
        unpack(archive, destination)
    except ArchiveError as error:
        raise ModelSourceError(str(error)) from error
    logger.info("unpacked %s into %s", archive, destination)
    unpacked = Settings.from_env(
        {**os.environ, Env.MODEL_DIR: str(destination), Env.MODEL_ARCHIVE: ""}
    )
    return dataclasses.replace(unpacked, run_dir=settings.run_dir)
