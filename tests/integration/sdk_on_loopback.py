"""Runs a script of the SageMaker Python SDK's local mode with the compose file that the SDK
writes adjusted for the project's machines, which have no bridge network: the container uses
the host's network and serves on 127.0.0.1 at $LOCAL_MODE_PORT. Run with the SDK's Python:

    .venv-sdk/bin/python tests/integration/sdk_on_loopback.py SCRIPT [ARG ...]

The SDK merges ``local: container_config`` into its service, but compose rejects
``network_mode: host`` beside the network and port mapping the SDK adds itself, so the file is
rewritten after the SDK generates it. It also notes when ``deploy()`` starts, so that the test
can time it to the first answer.
"""

import os
import runpy
import sys
import time

import yaml
from sagemaker.local import image
from sagemaker.model import Model

PORT = os.environ["LOCAL_MODE_PORT"]
_generate = image._SageMakerContainer._generate_compose_file


def _on_loopback(self, command, additional_volumes=None, additional_env_vars=None):
    compose = _generate(self, command, additional_volumes, additional_env_vars)
    compose.pop("networks", None)
    for service in compose["services"].values():
        service.pop("networks", None)
        service.pop("ports", None)
        service["network_mode"] = "host"
        service["environment"] += ["SERVING_HOST=127.0.0.1", f"SAGEMAKER_BIND_TO_PORT={PORT}"]
    with open(os.path.join(self.container_root, image.DOCKER_COMPOSE_FILENAME), "w") as file:
        yaml.dump(compose, file, default_flow_style=False)
    return compose


_deploy = Model.deploy


def _timed_deploy(self, *args, **kwargs):
    """Deploy, having written when it started to $LOCAL_MODE_DEPLOY_STARTED (for the test)."""
    with open(os.environ["LOCAL_MODE_DEPLOY_STARTED"], "w") as file:
        file.write(str(time.time()))
    return _deploy(self, *args, **kwargs)


image._SageMakerContainer._generate_compose_file = _on_loopback
Model.deploy = _timed_deploy
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
