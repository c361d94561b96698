"""An environment for the AWS tools under test (push, deploy) in which nothing can reach beyond
127.0.0.1: no credentials or config of this machine's user, no instance metadata, and every
proxy variable at a dead port, where a call meant for AWS fails."""

from __future__ import annotations

import os

DEAD_PROXY = "http://127.0.0.1:9"
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def aws_free_env(**extra: str) -> dict[str, str]:
    """This process's environment without AWS settings or proxies, with nothing that could
    reach outside 127.0.0.1: no instance metadata, no config files, a dead proxy."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AWS_") and key.lower() not in PROXY_VARS
    }
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE="/nonexistent/aws-config",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
        BOTO_CONFIG="/nonexistent/boto",
        HTTP_PROXY=DEAD_PROXY,
        HTTPS_PROXY=DEAD_PROXY,
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra)
    return env
