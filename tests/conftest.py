"""Shared pytest fixtures: a local HTTP server and a tiny Imagenette tree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LocalHTTPServer, make_image_tree


@pytest.fixture
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHTTPServer]:
    """A server on 127.0.0.1 serving a fresh empty folder (``.root``); shut down afterwards."""
    with LocalHTTPServer(tmp_path_factory.mktemp("www")) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_imagenette(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An extracted 10-class imagenette2-160-style tree (3 train, 2 val per class). Read-only:
    it is shared by the whole session, so copy it before changing anything."""
    return make_image_tree(tmp_path_factory.mktemp("tiny"), "imagenette2-160")
