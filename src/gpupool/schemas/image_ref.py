"""What a container image reference may look like (``[registry/]name[:tag][@digest]``): the
one rule the API's validation and the node's launch both apply. No pydantic here: the
executors import it."""

from __future__ import annotations

import re

IMAGE_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")
IMAGE_RULE = ("an image reference is letters, digits and . _ / : @ + -, starting with a letter "
              "or digit (e.g. docker.io/library/python:3.12)")
IMAGES_LABEL = "gpupool.io/images"
"""The node label saying a node runs images, and with what (``podman``): jobs with an image
are placed only on nodes that carry it."""
